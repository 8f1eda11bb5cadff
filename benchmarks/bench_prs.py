"""LD clumping + P+T scoring: ours vs ``plink1.9 --clump`` and ``--score … sum``.

A seeded generated study (default 3,000 samples, ~8,000 sites over 2.2 Mb, LD blocks, missing
calls, a multi-allelic record) is scanned once for one gene's cis-eQTL p-values (TSS ± 1 Mb).
Not timed: the generation, the eQTL scan, and writing PLINK's bed once with plink2. Timed:

- PLINK: ``plink1.9 --clump`` (p1 = 1, r² = 0.1, 250 kb) on the p-values, then
  ``plink1.9 --score … sum`` with the index variants weighted by their slopes; process start,
  reading the bed and writing/reading the small text tables included, as users run it.
- ours: ``genotype_codes`` + :func:`clump` + :func:`score` on the window's dosages in memory
  (the asset's situation: the dosages are already loaded for the eQTL scan).

Both runs are checked before any figure is printed: the same index variants in the same order,
and the same scores (to PLINK's 6 printed digits). The last line is

    prs: ratio=X (ours S s, plink P s)

with X = PLINK seconds / ours (> 1: ours is faster).

Run: .venv/bin/python benchmarks/bench_prs.py [--samples 3000] [--sites 8000] [--seed 3]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from apoe_assets.genomics.fasta import ReferenceGenome
from apoe_assets.genomics.phenotypes import read_covariates, read_expression_bed
from apoe_assets.genomics.vcf import read_genotypes
from apoe_assets.stats.eqtl import cis_window, map_cis_nominal
from apoe_assets.stats.ld import DEFAULT_KB, DEFAULT_P1, DEFAULT_R2, clump, genotype_codes
from apoe_assets.stats.prs import score
from apoe_assets_tests.requirements import missing_tools
from apoe_assets_tests.stats.generated import CONTIG, write_generated_study
from apoe_assets_tests.stats.peers import (
    PLINK_TOOLS,
    printed_tolerance,
    run_plink_clump,
    run_plink_score,
    write_keep,
    write_plink_bed,
)

CONTIG_LENGTH = 2_200_000
FLANK = 1_000_000
"""cis window TSS ± 1 Mb: one 2-Mb window."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=3000)
    parser.add_argument("--sites", type=int, default=8000)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=1, help="best of this many timings")
    args = parser.parse_args()
    if missing := missing_tools(*PLINK_TOOLS):
        raise SystemExit(f"{', '.join(missing)} must be on the PATH (make peers)")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        study = write_generated_study(tmp / "study", seed=args.seed, n_samples=args.samples,
                                      n_sites=args.sites, contig_length=CONTIG_LENGTH, n_genes=1)
        reference = ReferenceGenome(study.reference)
        genotypes, _ = read_genotypes(study.vcf, CONTIG, reference)
        reference.close()
        expression = read_expression_bed(study.expression_bed)
        covariates = read_covariates(study.covariates_tsv)
        gene = study.genes.iloc[0]
        samples = list(expression.columns)
        window = cis_window(genotypes, gene, samples, flank=FLANK)
        eqtl = map_cis_nominal(window, expression.loc[gene["gene_id"]], covariates,
                               gene_id=gene["gene_id"], tss=int(gene["tss"]))
        table = eqtl.table
        ids, slopes = table["variant_id"].to_numpy(), table["slope"].to_numpy()
        pvalues = table["pval_nominal"].to_numpy()
        dosages = window.dosages[eqtl.rows]
        positions = table["pos"].to_numpy()
        bfile = write_plink_bed(study.vcf, tmp / "plink" / "genotypes")
        keep = write_keep(samples, tmp / "plink" / "keep.txt")
        setting = {"p1": DEFAULT_P1, "r2": DEFAULT_R2, "kb": DEFAULT_KB}

        def ours() -> tuple[np.ndarray, np.ndarray]:
            result = clump(genotype_codes(dosages), positions, pvalues, **setting)
            return result.index, score(dosages[result.index], slopes[result.index])

        def plink() -> tuple[list[str], pd.DataFrame]:
            clumps = run_plink_clump(bfile, pd.DataFrame({"SNP": ids, "P": pvalues}),
                                     tmp / "clump", keep=keep, **setting)
            weights = pd.DataFrame({"SNP": clumps["SNP"]}).merge(
                table[["variant_id", "slope"]], left_on="SNP", right_on="variant_id")
            weights = pd.DataFrame({"ID": weights["SNP"],
                                    "A1": weights["SNP"].str.split(":").str[3],
                                    "W": weights["slope"]})
            return clumps["SNP"].tolist(), run_plink_score(bfile, weights, tmp / "score",
                                                           keep=keep)

        ours_s, peer_s = np.inf, np.inf
        for _ in range(args.repeats):
            started = time.perf_counter()
            peer_index, peer_scores = plink()
            peer_s = min(peer_s, time.perf_counter() - started)
            started = time.perf_counter()
            index, scores = ours()
            ours_s = min(ours_s, time.perf_counter() - started)

    if list(ids[index]) != peer_index:
        raise SystemExit("index variants differ from PLINK's")
    theirs = peer_scores.loc[samples, "SCORESUM"].to_numpy()
    gap = np.abs(scores - theirs)
    if not (gap <= printed_tolerance(theirs) * (1 + 1e-9)).all():
        raise SystemExit(f"scores differ from PLINK's (max gap {gap.max():.3g})")
    relative = np.max(gap / np.maximum(np.abs(theirs), 1e-300))
    missing = int(np.isnan(dosages).sum())
    print(f"{len(samples)} samples, {len(ids)} variants in a {2 * FLANK // 1000} kb window "
          f"({missing} missing calls); {len(index)} index variants identical to PLINK's; "
          f"scores equal to PLINK's printed 6 digits (max relative gap {relative:.1e})")
    print(f"prs: ratio={peer_s / ours_s:.2f} (ours {ours_s:.2f} s, plink {peer_s:.2f} s)")


if __name__ == "__main__":
    main()
