"""Session fixtures of the statistics tests: the demo study loaded once, a generated study, and
tensorQTL run once per study (as a process, and step for step in float64)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from apoe_assets.genomics.annotation import read_annotation
from apoe_assets.genomics.fasta import ReferenceGenome
from apoe_assets.genomics.genotypes import GenotypeMatrix
from apoe_assets.genomics.phenotypes import read_covariates, read_expression_bed
from apoe_assets.genomics.vcf import read_genotypes
from apoe_assets.stats.eqtl import CisWindow, EqtlResult, cis_window, map_cis_nominal
from apoe_assets_tests.requirements import require_module, require_tools
from apoe_assets_tests.stats.generated import CONTIG, GeneratedStudy, write_generated_study
from apoe_assets_tests.stats.peers import (
    TENSORQTL_INPUT_TOOLS,
    run_tensorqtl_cis_nominal,
    tensorqtl_nominal_in_process,
    write_plink_bed,
)

DEMO = Path(__file__).resolve().parents[2] / "data" / "demo"
DEMO_PEER_GENES = ["APOE", "NECTIN2", "TOMM40", "BCAM", "BCL3", "APOC2"]
"""Demo genes compared with tensorQTL: planted h² 0.27, 0.36, 0.12, 0.08 (below the truth
test's 0.1) and two null genes; all of them study genes."""
GENERATED_MAF = 0.05
GENERATED_CONTIG_LENGTH = 400_000
GENERATED_WINDOW = GENERATED_CONTIG_LENGTH
"""Every generated site is in every gene's cis window, so each hand-built site is tested."""


@dataclass
class LoadedStudy:
    """A study's genotypes, expression, covariates and genes, read with our readers."""

    genotypes: GenotypeMatrix
    expression: pd.DataFrame
    covariates: pd.DataFrame
    genes: pd.DataFrame
    """Indexed by gene_id; ``tss`` 0-based."""
    flank: int
    windows: dict[str, CisWindow] = field(default_factory=dict)

    @property
    def samples(self) -> list[str]:
        """Expression samples in the BED's order (tensorQTL's order)."""
        return list(self.expression.columns)

    def window(self, gene_id: str) -> CisWindow:
        if gene_id not in self.windows:
            self.windows[gene_id] = cis_window(self.genotypes, self.genes.loc[gene_id],
                                               self.samples, flank=self.flank)
        return self.windows[gene_id]

    def scan(self, gene_id: str, **kwargs: object) -> EqtlResult:
        return map_cis_nominal(self.window(gene_id), self.expression.loc[gene_id],
                               self.covariates, gene_id=gene_id,
                               tss=int(self.genes.loc[gene_id, "tss"]), **kwargs)

    def scan_all(self, gene_ids: Sequence[str], **kwargs: object) -> pd.DataFrame:
        return pd.concat([self.scan(g, **kwargs).table for g in gene_ids], ignore_index=True)


@dataclass
class PeerOutputs:
    """tensorQTL's cis_nominal pairs for some genes of a study."""

    gene_ids: list[str]
    process: pd.DataFrame
    float64: pd.DataFrame
    plink_prefix: Path
    expression_bed: Path


def _require_peers() -> None:
    require_module("tensorqtl")
    require_tools(*TENSORQTL_INPUT_TOOLS)


@pytest.fixture(scope="session")
def demo() -> LoadedStudy:
    study = yaml.safe_load((DEMO / "study.yaml").read_text())
    reference = ReferenceGenome(DEMO / study["reference_fasta"])
    genotypes, _ = read_genotypes(DEMO / study["genotypes"], "chr19", reference)
    reference.close()
    genes = read_annotation(DEMO / study["annotation"]).set_index("gene_id")
    return LoadedStudy(genotypes, read_expression_bed(DEMO / study["expression"]),
                       read_covariates(DEMO / study["covariates"]), genes,
                       int(study["cis_window"]))


@pytest.fixture(scope="session")
def demo_truth() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Planted truth: genes (indexed by gene_id) and causal variants."""
    genes = pd.read_csv(DEMO / "truth" / "genes.tsv", sep="\t").set_index("gene_id")
    causal = pd.read_csv(DEMO / "truth" / "causal_variants.tsv", sep="\t")
    return genes, causal


@pytest.fixture(scope="session")
def demo_peer(demo: LoadedStudy, tmp_path_factory: pytest.TempPathFactory) -> PeerOutputs:
    """tensorQTL on the demo genotypes (via plink2), covariates and :data:`DEMO_PEER_GENES`."""
    _require_peers()
    folder = tmp_path_factory.mktemp("demo_tensorqtl")
    symbols = demo.genes.reset_index().set_index("symbol")["gene_id"]
    gene_ids = symbols.loc[DEMO_PEER_GENES].tolist()
    bed = pd.read_csv(DEMO / "expression" / "expression.bed.gz", sep="\t")
    bed_path = folder / "expression.bed.gz"
    bed[bed["gene_id"].isin(gene_ids)].to_csv(bed_path, sep="\t", index=False,
                                              float_format="%.17g")
    prefix = write_plink_bed(DEMO / "genotypes" / "chr19.vcf.gz", folder / "genotypes")
    covariates = DEMO / "expression" / "covariates.tsv"
    process = run_tensorqtl_cis_nominal(prefix, bed_path, covariates, folder / "out",
                                        window=demo.flank)
    exact = tensorqtl_nominal_in_process(prefix, bed_path, covariates, window=demo.flank)
    return PeerOutputs(gene_ids, process, exact, prefix, bed_path)


@pytest.fixture(scope="session")
def generated_study(tmp_path_factory: pytest.TempPathFactory) -> GeneratedStudy:
    return write_generated_study(tmp_path_factory.mktemp("generated"), seed=11,
                                 n_samples=300, n_sites=700,
                                 contig_length=GENERATED_CONTIG_LENGTH, n_genes=3)


@pytest.fixture(scope="session")
def generated(generated_study: GeneratedStudy) -> LoadedStudy:
    reference = ReferenceGenome(generated_study.reference)
    genotypes, _ = read_genotypes(generated_study.vcf, CONTIG, reference)
    reference.close()
    return LoadedStudy(genotypes, read_expression_bed(generated_study.expression_bed),
                       read_covariates(generated_study.covariates_tsv),
                       generated_study.genes.set_index("gene_id"), GENERATED_WINDOW)


@pytest.fixture(scope="session")
def generated_peer(generated_study: GeneratedStudy,
                   tmp_path_factory: pytest.TempPathFactory) -> PeerOutputs:
    """tensorQTL on the generated study with MAF ≥ :data:`GENERATED_MAF`."""
    _require_peers()
    folder = tmp_path_factory.mktemp("generated_tensorqtl")
    prefix = write_plink_bed(generated_study.vcf, folder / "genotypes")
    args = (prefix, generated_study.expression_bed, generated_study.covariates_tsv)
    process = run_tensorqtl_cis_nominal(*args, folder / "out", window=GENERATED_WINDOW,
                                        maf_threshold=GENERATED_MAF)
    exact = tensorqtl_nominal_in_process(*args, window=GENERATED_WINDOW,
                                         maf_threshold=GENERATED_MAF)
    return PeerOutputs(generated_study.genes["gene_id"].tolist(), process, exact, prefix,
                       generated_study.expression_bed)


def relative_error(ours: np.ndarray, theirs: np.ndarray) -> np.ndarray:
    """|ours − theirs| / |theirs| (0 where both are 0)."""
    ours, theirs = np.asarray(ours, dtype=float), np.asarray(theirs, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        error = np.abs(ours - theirs) / np.abs(theirs)
    return np.where(ours == theirs, 0.0, error)
