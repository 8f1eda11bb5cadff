"""personal_sequences on the demo study: every record byte-identical to bcftools consensus."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import dagster as dg
import pytest
import yaml

from apoe_assets.definitions import build_definitions
from apoe_assets.genomics.personal import SequenceFolder
from apoe_assets.study import DEMO_STUDY, load_study

PEERS = ("bcftools", "samtools")
pytestmark = pytest.mark.skipif(any(shutil.which(p) is None for p in PEERS),
                                reason="bcftools/samtools not installed (.ci/run installs them)")


def _demo_copy(folder: Path, **fields: object) -> Path:
    """The demo study with absolute paths and its own storage."""
    study = yaml.safe_load(DEMO_STUDY.read_text())
    for key in ("reference_fasta", "genotypes", "expression", "covariates", "annotation"):
        study[key] = str(DEMO_STUDY.parent / study[key])
    study.update(storage_root=str(folder / "storage"), truth=None, **fields)
    path = folder / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    return path


def _materialise_gene(study_file: Path, gene: str) -> dg.ExecuteInProcessResult:
    defs = build_definitions(load_study(study_file))
    job = defs.resolve_implicit_global_asset_job_def()
    with dg.instance_for_test() as instance:
        for keys, partition in ((["reference_genome", "gene_annotation"], None),
                                (["genotypes"], "chr19"), (["personal_sequences"], gene)):
            result = job.execute_in_process(
                instance=instance, partition_key=partition,
                asset_selection=[dg.AssetKey(k) for k in keys])
            assert result.success
    return result


def _bcftools(region_fasta: Path, vcf: Path, sample: str, haplotype: int, *flags: str) -> str:
    out = subprocess.run(["bcftools", "consensus", "-f", str(region_fasta), "-s", sample,
                          "-H", f"{haplotype}pIu", *flags, str(vcf)],
                         capture_output=True, text=True, check=True).stdout
    return "".join(out.splitlines()[1:])


@pytest.mark.parametrize(("gene", "missing"), [("APOE", "ref"), ("TOMM40", "N")])
def test_every_haplotype_matches_bcftools_consensus(tmp_path: Path, gene: str, missing: str
                                                   ) -> None:
    study_file = _demo_copy(tmp_path, sequences={"missing": missing})
    result = _materialise_gene(study_file, gene)
    check = result.get_asset_check_evaluations()[0]
    assert check.check_name == "tss_centred" and check.passed
    folder = SequenceFolder(tmp_path / "storage" / "personal_sequences" / f"{gene}.sequences")
    manifest = folder.manifest()
    metadata = result.asset_materializations_for_node("personal_sequences")[0].metadata
    region = metadata["window"].value
    study = load_study(study_file)
    region_fasta = tmp_path / "region.fa"
    with region_fasta.open("w") as handle:
        subprocess.run(["samtools", "faidx", str(study.reference_fasta), region], check=True,
                       stdout=handle)
    flags = ("-M", "N") if missing == "N" else ()
    ours = folder.open()
    assert len(manifest) == 2 * 500
    for row in manifest.itertuples():
        theirs = _bcftools(region_fasta, study.genotypes, row.sample, row.haplotype, *flags)
        assert ours.fetch(row.record) == theirs, row.record
    assert metadata["unique_sequences"].value == manifest["hash"].nunique() < len(manifest)
