"""cis-eQTL nominal scan: ours vs tensorQTL ``cis_nominal`` on the CPU, same inputs.

A seeded generated study (default 2,700 expressed of 3,000 genotyped samples, ~8,000 sites over
2.2 Mb with missing calls, 4 covariates, genes whose TSS ± 1 Mb windows each span ~2 Mb of the
same region). Not timed: generating it and writing tensorQTL's PLINK bed with plink2. Timed:

- tensorQTL as users run it: ``python -m tensorqtl BED_PREFIX expression.bed.gz OUT --mode
  cis_nominal --covariates cov.tsv`` as a process (start, imports, reading every input, writing
  its parquet), and, for information, its in-process ``cis.map_nominal`` on genotypes already
  loaded (``genotypeio.load_genotypes``, timed apart).
- ours, end to end: reading the same study's VCF (our genotype input), expression BED and
  covariates with our readers, then ``cis_window`` + ``map_cis_nominal`` per gene; and the scan
  alone (``map_cis_nominal`` on loaded windows) for information.

Before any figure is printed, our tables are checked against the process's (float32) in the
same run: the same variants (tensorQTL's NaN rows for monomorphic sites aside), slope within
1e-4 standard errors, slope_se to 1e-5 relative and ln p to 1e-4. The last line is

    cis_eqtl: ratio=X (ours S s, tensorqtl P s)

with X = tensorQTL process seconds / ours end to end (> 1: ours is faster).

Run: .venv/bin/python benchmarks/bench_eqtl.py [--samples 3000] [--sites 8000] [--genes 4]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from apoe_assets.genomics.fasta import ReferenceGenome
from apoe_assets.genomics.phenotypes import read_covariates, read_expression_bed
from apoe_assets.genomics.vcf import read_genotypes
from apoe_assets.stats.eqtl import cis_window, map_cis_nominal
from apoe_assets_tests.requirements import missing_tools
from apoe_assets_tests.stats.generated import CONTIG, write_generated_study
from apoe_assets_tests.stats.peers import (
    TENSORQTL_INPUT_TOOLS,
    run_tensorqtl_cis_nominal,
    write_plink_bed,
)

CONTIG_LENGTH = 2_200_000
FLANK = 1_000_000
SLOPE_IN_SE = 1e-4
SE_RELATIVE = 1e-5
LOG_P_RELATIVE = 1e-4
"""Float32 tolerances of tensorQTL's process (see apoe_assets_tests/stats/test_eqtl_peer.py)."""


def _ours(study, genes: pd.DataFrame) -> tuple[list[pd.DataFrame], float]:
    """End-to-end scan from files; returns the tables and the seconds of the scans alone."""
    expression = read_expression_bed(study.expression_bed)
    covariates = read_covariates(study.covariates_tsv)
    reference = ReferenceGenome(study.reference)
    genotypes, _ = read_genotypes(study.vcf, CONTIG, reference)
    reference.close()
    samples = list(expression.columns)
    tables, scan_s = [], 0.0
    for _, gene in genes.iterrows():
        window = cis_window(genotypes, gene, samples, flank=FLANK)
        started = time.perf_counter()
        tables.append(map_cis_nominal(window, expression.loc[gene["gene_id"]], covariates,
                                      gene_id=gene["gene_id"], tss=int(gene["tss"])).table)
        scan_s += time.perf_counter() - started
    return tables, scan_s


def _in_process(prefix: Path, study, out: Path) -> tuple[float, float]:
    """Seconds of tensorQTL's genotype loading and of its ``map_nominal`` (its chatter
    silenced)."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()), \
            warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from tensorqtl import cis, core, genotypeio

        out.mkdir(parents=True, exist_ok=True)
        return _time_in_process(cis, core, genotypeio, prefix, study, out)


def _time_in_process(cis, core, genotypeio, prefix: Path, study, out: Path
                     ) -> tuple[float, float]:
    phenotype_df, position_df = core.read_phenotype_bed(str(study.expression_bed))
    covariates_df = pd.read_csv(study.covariates_tsv, sep="\t", index_col=0).T
    started = time.perf_counter()
    genotype_df, variant_df = genotypeio.load_genotypes(str(prefix),
                                                        select_samples=phenotype_df.columns)
    load_s = time.perf_counter() - started
    started = time.perf_counter()
    cis.map_nominal(genotype_df, variant_df, phenotype_df, position_df, "inproc",
                    covariates_df=covariates_df, window=FLANK, output_dir=str(out),
                    verbose=False)
    return load_s, time.perf_counter() - started


def _check(ours: pd.DataFrame, peer: pd.DataFrame) -> int:
    ours = ours.set_index(["phenotype_id", "variant_id"]).sort_index()
    peer = peer.set_index(["phenotype_id", "variant_id"]).sort_index()
    peer = peer[peer["slope"].notna()]
    if not ours.index.equals(peer.index):
        raise SystemExit("our variants differ from tensorQTL's")
    slope_gap = (np.abs(ours["slope"] - peer["slope"]) / ours["slope_se"]).max()
    se_gap = (np.abs(ours["slope_se"] - peer["slope_se"]) / peer["slope_se"]).max()
    log_p, log_p_peer = np.log(ours["pval_nominal"]), np.log(peer["pval_nominal"])
    p_gap = (np.abs(log_p - log_p_peer) / np.maximum(1, np.abs(log_p))).max()
    if slope_gap > SLOPE_IN_SE or se_gap > SE_RELATIVE or p_gap > LOG_P_RELATIVE:
        raise SystemExit(f"statistics differ: slope {slope_gap:.2e} SE, slope_se {se_gap:.2e}, "
                         f"ln p {p_gap:.2e}")
    print(f"identical statistics on {len(ours)} pairs: |Δslope| ≤ {slope_gap:.1e} SE, "
          f"slope_se ≤ {se_gap:.1e} relative, ln p ≤ {p_gap:.1e} relative")
    return len(ours)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=3000)
    parser.add_argument("--sites", type=int, default=8000)
    parser.add_argument("--genes", type=int, default=4)
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args()
    if missing := missing_tools(*TENSORQTL_INPUT_TOOLS):
        raise SystemExit(f"{', '.join(missing)} must be on the PATH (make peers)")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        study = write_generated_study(tmp / "study", seed=args.seed, n_samples=args.samples,
                                      n_sites=args.sites, contig_length=CONTIG_LENGTH,
                                      n_genes=args.genes)
        prefix = write_plink_bed(study.vcf, tmp / "plink" / "genotypes")

        started = time.perf_counter()
        peer = run_tensorqtl_cis_nominal(prefix, study.expression_bed, study.covariates_tsv,
                                         tmp / "tensorqtl", window=FLANK)
        peer_s = time.perf_counter() - started

        started = time.perf_counter()
        tables, scan_s = _ours(study, study.genes)
        ours_s = time.perf_counter() - started

        load_s, map_s = _in_process(prefix, study, tmp / "inproc")
    _check(pd.concat(tables, ignore_index=True), peer)
    print(f"{len(study.expression_samples)} samples, {args.genes} genes × ~"
          f"{2 * FLANK // 1000} kb windows, {os.cpu_count()} CPUs")
    print(f"tensorQTL in process: load_genotypes {load_s:.2f} s, map_nominal {map_s:.2f} s; "
          f"ours: map_cis_nominal alone {scan_s:.2f} s "
          f"(scan ratio {map_s / scan_s:.1f})")
    print(f"cis_eqtl: ratio={peer_s / ours_s:.2f} (ours {ours_s:.2f} s, tensorqtl {peer_s:.2f} s)")


if __name__ == "__main__":
    main()
