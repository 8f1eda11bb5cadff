"""The peer tools the statistics are checked against, driven as their users drive them.

``write_plink_bed`` turns a VCF into PLINK 1 binary files (bed/bim/fam) with ``bcftools norm``
(multi-allelic records split into biallelic ones, other ALTs coded REF, as our reader splits
them) and ``plink2``; variant IDs are forced to our ``chrom:pos:ref:alt`` and the bim keeps ALT
as A1 and REF as A2, so a dosage read back counts ALT copies. ``run_tensorqtl_cis_nominal``
runs ``python -m tensorqtl … --mode cis_nominal`` as a process and returns its pairs table.
Other test packages (LD clumping, PRS) reuse the PLINK writer.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd

PLINK2 = "plink2"
BCFTOOLS = "bcftools"
MAX_ALLELE_LENGTH = 10_000
"""Longest allele written into a variant ID; longer ones would make plink2 stop."""
TENSORQTL_MODULE = "tensorqtl"


def _run(command: list[str], what: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run(command, capture_output=True, text=True, cwd=cwd, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{what} failed ({result.returncode}): {' '.join(command)}\n"
                           f"{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    return result


def peers_available() -> bool:
    """True when plink2 and bcftools are on the PATH."""
    return shutil.which(PLINK2) is not None and shutil.which(BCFTOOLS) is not None


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
    import numpy as np
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
