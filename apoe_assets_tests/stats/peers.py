"""The peer tools the statistics are checked against, driven as their users drive them.

``write_plink_bed`` turns a VCF into PLINK 1 binary files (bed/bim/fam) with ``bcftools norm``
(multi-allelic records split into biallelic ones, other ALTs coded REF, as our reader splits
them) and ``plink2``; variant IDs are forced to our ``chrom:pos:ref:alt`` and the bim keeps ALT
as A1 and REF as A2, so a dosage read back counts ALT copies. ``run_tensorqtl_cis_nominal``
runs ``python -m tensorqtl … --mode cis_nominal`` as a process and returns its pairs table.
``run_plink_clump``, ``run_plink_score`` and ``run_plink_r2`` drive ``plink1.9 --clump``,
``--score … sum`` and ``--r2 dprime-signed`` on such files, restricted with ``--keep`` to the
samples a comparison uses (PLINK's allele frequencies, e.g. for mean imputation, are over the
samples it keeps).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

PLINK2 = "plink2"
PLINK19 = "plink1.9"
BCFTOOLS = "bcftools"
PLINK_PRINTED_DIGITS = 6
"""Significant digits of PLINK 1.9's printed scores and r² (its ``%g``-style output)."""
MAX_ALLELE_LENGTH = 10_000
"""Longest allele written into a variant ID; longer ones would make plink2 stop."""
TENSORQTL_MODULE = "tensorqtl"
TENSORQTL_INPUT_TOOLS = (BCFTOOLS, PLINK2)
"""What writes tensorQTL's PLINK input (:func:`write_plink_bed`)."""
PLINK_TOOLS = (BCFTOOLS, PLINK2, PLINK19)
"""What the PLINK 1.9 comparisons need: its input, then plink1.9 itself."""
LD_WINDOW_VARIANTS = 999_999
"""``--ld-window``: no limit on variants between a pair (the kb window decides)."""


def _run(command: list[str], what: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run(command, capture_output=True, text=True, cwd=cwd, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{what} failed ({result.returncode}): {' '.join(command)}\n"
                           f"{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    return result


def write_keep(samples: Sequence[str], path: Path | str) -> Path:
    """A PLINK ``--keep`` file (FID = IID = sample, as :func:`write_plink_bed` writes them)."""
    path = Path(path)
    path.write_text("".join(f"{s}\t{s}\n" for s in samples))
    return path


def _plink19(bfile: Path | str, keep: Path | str | None, out: Path, args: list[str],
             what: str, threads: int | None = None) -> None:
    # --keep-allele-order: A1 stays ALT (PLINK 1.9 otherwise makes A1 the minor allele,
    # which flips the sign of D for ALT-major variants)
    command = [PLINK19, "--bfile", str(bfile), "--allow-extra-chr", "--keep-allele-order",
               "--out", str(out), *args]
    if keep is not None:
        command += ["--keep", str(keep)]
    if threads is not None:
        command += ["--threads", str(threads)]
    _run(command, what)


def run_plink_clump(bfile: Path | str, pvalues: pd.DataFrame, out_dir: Path | str, *,
                    p1: float, r2: float, kb: float, p2: float = 1.0,
                    keep: Path | str | None = None, threads: int | None = None
                    ) -> pd.DataFrame:
    """``plink1.9 --clump`` of an assoc-style table (columns ``SNP``, ``P``; written with full
    precision in the given order). Returns one row per clump in PLINK's order: ``SNP`` (the
    index variant), ``P`` and ``members`` (the other variants it took with p ≤ ``p2``; the
    default p2 = 1 lists every member)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    assoc = out_dir / "clump.assoc"
    pvalues[["SNP", "P"]].to_csv(assoc, sep="\t", index=False, float_format="%.17g")
    out = out_dir / "clump"
    out.with_suffix(".clumped").unlink(missing_ok=True)
    _plink19(bfile, keep, out, ["--clump", str(assoc), "--clump-p1", repr(float(p1)),
                                "--clump-p2", repr(float(p2)), "--clump-r2", repr(float(r2)),
                                "--clump-kb", repr(float(kb))], "plink1.9 --clump", threads)
    path = out.with_suffix(".clumped")
    if not path.exists():  # PLINK writes no file when no variant passes p1
        return pd.DataFrame({"SNP": pd.Series(dtype=str), "P": pd.Series(dtype=float),
                             "members": pd.Series(dtype=object)})
    table = pd.read_csv(path, sep=r"\s+", dtype={"SNP": str, "SP2": str})
    members = [[] if sp2 == "NONE" else [m.rsplit("(", 1)[0] for m in sp2.split(",")]
               for sp2 in table["SP2"]]
    return table[["SNP", "P"]].assign(members=members)


def run_plink_score(bfile: Path | str, weights: pd.DataFrame, out_dir: Path | str, *,
                    keep: Path | str | None = None, frequencies: pd.DataFrame | None = None,
                    threads: int | None = None) -> pd.DataFrame:
    """``plink1.9 --score FILE 1 2 3 header sum`` with ``weights`` (columns ``ID``, ``A1`` —
    the counted allele —, ``W``). Missing genotypes count as twice the A1 frequency: of the
    samples kept, or ``frequencies`` (columns ``SNP``, ``A1``, ``A2``, ``FREQ`` of A1,
    ``NCHROBS``) read with ``--read-freq``. Returns ``CNT`` (alleles called), ``CNT2`` (A1
    copies called) and ``SCORESUM`` indexed by IID."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "weights.txt"
    weights[["ID", "A1", "W"]].to_csv(path, sep="\t", index=False, float_format="%.17g")
    args = ["--score", str(path), "1", "2", "3", "header", "sum"]
    if frequencies is not None:
        frq = out_dir / "freq.frq"
        frequencies.assign(CHR=0).rename(columns={"FREQ": "MAF"})[
            ["CHR", "SNP", "A1", "A2", "MAF", "NCHROBS"]].to_csv(
            frq, sep="\t", index=False, float_format="%.17g")
        args += ["--read-freq", str(frq)]
    out = out_dir / "score"
    _plink19(bfile, keep, out, args, "plink1.9 --score", threads)
    table = pd.read_csv(out.with_suffix(".profile"), sep=r"\s+", dtype={"FID": str, "IID": str})
    return table.set_index("IID")[["CNT", "CNT2", "SCORESUM"]]


def run_plink_r2(bfile: Path | str, anchors: Sequence[str], out_dir: Path | str, *,
                 window_kb: float, keep: Path | str | None = None) -> pd.DataFrame:
    """``plink1.9 --r2 dprime-signed`` of each anchor variant with every variant within
    ``window_kb`` (no r² floor). With ``dprime`` PLINK's r² is the haplotype-frequency one
    (as ``--clump`` uses), not the allele-count correlation of plain ``--r2``. Returns
    ``SNP_A``, ``SNP_B``, ``R2`` and the signed ``DP`` (D′, whose sign is D's)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    snps = out_dir / "anchors.txt"
    snps.write_text("".join(f"{a}\n" for a in anchors))
    out = out_dir / "ld"
    _plink19(bfile, keep, out, ["--r2", "dprime-signed", "--ld-snp-list", str(snps),
                                "--ld-window-r2", "0", "--ld-window", str(LD_WINDOW_VARIANTS),
                                "--ld-window-kb", repr(float(window_kb))], "plink1.9 --r2")
    return pd.read_csv(out.with_suffix(".ld"), sep=r"\s+",
                       dtype={"SNP_A": str, "SNP_B": str})[["SNP_A", "SNP_B", "R2", "DP"]]


def printed_tolerance(values: np.ndarray, digits: int = PLINK_PRINTED_DIGITS) -> np.ndarray:
    """Half a unit in the last place of ``values`` printed with ``digits`` significant digits:
    the most a correct value can differ from PLINK's printed one."""
    values = np.abs(np.asarray(values, dtype=np.float64))
    with np.errstate(divide="ignore"):
        exponent = np.floor(np.log10(np.where(values > 0, values, 1.0)))
    return np.where(values > 0, 0.5 * 10.0 ** (exponent - digits + 1), 0.0)


def split_multiallelic(vcf: Path | str, out: Path | str) -> Path:
    """``bcftools norm -m-any``: one biallelic record per ALT, written bgzipped to ``out``."""
    out = Path(out)
    _run([BCFTOOLS, "norm", "-m-any", "-Oz", "-o", str(out), str(vcf)], "bcftools norm")
    return out


def write_plink_bed(vcf: Path | str, prefix: Path | str, threads: int = 1) -> Path:
    """PLINK 1 bed/bim/fam at ``prefix`` from ``vcf``: IDs ``chrom:pos:ref:alt`` with the
    VCF's chromosome names (``chr19`` stays ``chr19``), FID = IID = the VCF sample ID, A1 = ALT,
    half-missing calls missing. Returns ``prefix``."""
    prefix = Path(prefix)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    split = split_multiallelic(vcf, prefix.with_name(prefix.name + ".split.vcf.gz"))
    _run([PLINK2, "--vcf", str(split), "--make-bed", "--out", str(prefix),
          "--set-all-var-ids", "@:#:$r:$a", "--new-id-max-allele-len", str(MAX_ALLELE_LENGTH),
          "--double-id", "--output-chr", "chrM", "--vcf-half-call", "missing",
          "--allow-extra-chr", "--threads", str(threads)], "plink2 --make-bed")
    split.unlink()
    return prefix


def read_bim(prefix: Path | str) -> pd.DataFrame:
    """The .bim of ``prefix``: chrom, variant_id, cm, pos, a1 (ALT), a2 (REF)."""
    return pd.read_csv(f"{prefix}.bim", sep="\t", header=None, dtype={0: str, 1: str},
                       names=["chrom", "variant_id", "cm", "pos", "a1", "a2"])


def write_covariates(covariates: pd.DataFrame, path: Path | str) -> Path:
    """A tensorQTL covariates file (covariates × samples, first column ``ID``)."""
    path = Path(path)
    covariates.rename_axis("ID").to_csv(path, sep="\t", float_format="%.17g")
    return path


def run_tensorqtl_cis_nominal(plink_prefix: Path | str, expression_bed: Path | str,
                              covariates_tsv: Path | str | None, out_dir: Path | str, *,
                              window: int = 1_000_000, maf_threshold: float = 0.0,
                              prefix: str = "peer") -> pd.DataFrame:
    """Run ``python -m tensorqtl PREFIX BED OUT --mode cis_nominal`` as a process and return
    its pairs (all chromosomes concatenated): phenotype_id, variant_id, start_distance, af,
    ma_samples, ma_count, pval_nominal, slope, slope_se.

    The BED must be sorted and its samples must all be in the PLINK fam; tensorQTL maps each
    phenotype against variants with 1-based position in [BED start + 1 − window, BED end +
    window] (a TSS BED row ``tss0, tss0 + 1`` gives TSS ± window).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", TENSORQTL_MODULE, str(plink_prefix), str(expression_bed),
               prefix, "--mode", "cis_nominal", "--window", str(window),
               "--maf_threshold", repr(float(maf_threshold)), "--output_dir", str(out_dir)]
    if covariates_tsv is not None:
        command += ["--covariates", str(covariates_tsv)]
    _run(command, "tensorqtl cis_nominal")
    files = sorted(out_dir.glob(f"{prefix}.cis_qtl_pairs.*.parquet"))
    if not files:
        return pd.DataFrame(columns=["phenotype_id", "variant_id", "start_distance", "af",
                                     "ma_samples", "ma_count", "pval_nominal", "slope",
                                     "slope_se"])
    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)


def tensorqtl_nominal_in_process(plink_prefix: Path | str, expression_bed: Path | str,
                                 covariates_tsv: Path | str, *, window: int = 1_000_000,
                                 maf_threshold: float = 0.0, float64: bool = True
                                 ) -> pd.DataFrame:
    """tensorQTL's ``map_nominal`` loop, step for step with tensorQTL's own functions, in
    float64 when asked: its readers (``load_genotypes`` of the PLINK files,
    ``read_phenotype_bed``), its cis windows (``InputGeneratorCis``), ``impute_mean``,
    ``calculate_maf`` filter, ``Residualizer``, ``calculate_cis_nominal`` and ``get_t_pval``.

    ``python -m tensorqtl`` computes in float32, so its slopes carry float32 rounding
    (relative errors up to ~1e-2 for slopes near zero); this runs the same algebra in float64
    so that a comparison can be held to 1e-6 relative.
    """
    import torch
    from tensorqtl import cis, core, genotypeio

    dtype = torch.float64 if float64 else torch.float32
    phenotype_df, position_df = core.read_phenotype_bed(str(expression_bed))
    covariates_df = pd.read_csv(covariates_tsv, sep="\t", index_col=0).T
    genotype_df, variant_df = genotypeio.load_genotypes(str(plink_prefix),
                                                        select_samples=phenotype_df.columns)
    residualizer = core.Residualizer(torch.tensor(covariates_df.loc[phenotype_df.columns].values,
                                                  dtype=dtype))
    dof = residualizer.dof
    generator = genotypeio.InputGeneratorCis(genotype_df, variant_df, phenotype_df, position_df,
                                             window=window)
    frames = []
    for phenotype, genotypes, genotype_range, phenotype_id in generator.generate_data():
        genotypes_t = torch.tensor(genotypes, dtype=dtype)
        core.impute_mean(genotypes_t)
        span = slice(genotype_range[0], genotype_range[-1] + 1)
        variant_ids = variant_df.index[span]
        start_distance = variant_df["pos"].values[span] - generator.phenotype_start[phenotype_id]
        if maf_threshold > 0:
            mask = (core.calculate_maf(genotypes_t) >= maf_threshold).numpy()
            genotypes_t = genotypes_t[torch.from_numpy(mask)]
            variant_ids, start_distance = variant_ids[mask], start_distance[mask]
        tstat, slope, slope_se, af, ma_samples, ma_count = (
            t.numpy() for t in cis.calculate_cis_nominal(
                genotypes_t, torch.tensor(phenotype, dtype=dtype), residualizer=residualizer))
        frames.append(pd.DataFrame({
            "phenotype_id": phenotype_id, "variant_id": np.asarray(variant_ids),
            "start_distance": start_distance, "af": af, "ma_samples": ma_samples,
            "ma_count": ma_count, "pval_nominal": core.get_t_pval(tstat, dof), "slope": slope,
            "slope_se": slope_se}))
    return pd.concat(frames, ignore_index=True)
