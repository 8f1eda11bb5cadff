"""personal_sequences on the demo study: every record byte-identical to bcftools consensus."""

from __future__ import annotations

import subprocess
from pathlib import Path

import dagster as dg
import pyfaidx
import pytest

from apoe_assets.definitions import build_definitions
from apoe_assets.genomics.coordinates import Interval
from apoe_assets.genomics.fasta import ReferenceGenome
from apoe_assets.genomics.personal import SequenceFolder
from apoe_assets.study import load_study
from apoe_assets_tests.requirements import needs_tools
from apoe_assets_tests.studies import demo_copy

pytestmark = needs_tools("bcftools", "samtools")


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
    study_file = demo_copy(tmp_path, sequences={"missing": missing})
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
    assert manifest.groupby("hash")["length"].nunique().eq(1).all()

    record = manifest["record"].iloc[7]
    assert str(pyfaidx.Fasta(str(folder.fasta), build_index=False)[record]) == ours.fetch(record)
    cli = subprocess.run(["samtools", "faidx", str(folder.fasta), record], check=True,
                         capture_output=True, text=True).stdout
    assert "".join(cli.splitlines()[1:]) == ours.fetch(record)


def test_model_inputs_put_each_tss_at_the_centre(tmp_path: Path) -> None:
    study_file = demo_copy(tmp_path)
    _materialise_gene(study_file, "APOE")
    study = load_study(study_file)
    folder = SequenceFolder(tmp_path / "storage" / "personal_sequences" / "APOE.sequences")
    manifest = folder.manifest()
    shifted = manifest.loc[manifest["tss_index"] != manifest["tss_index"].mode()[0], "record"]
    plain = manifest.loc[manifest["tss_index"] == manifest["tss_index"].mode()[0], "record"]
    records = [*shifted[:3], *plain[:3]]
    assert len(shifted) > 0  # indels upstream of the TSS exist in the demo
    length = study.window_length
    tss = int(study.gene_table.set_index("partition_key").at["APOE", "tss"])
    reference = ReferenceGenome(study.reference_fasta).fetch(
        Interval("chr19", tss - 8, tss + 9))
    for name, sequence in zip(records, folder.model_inputs(length, records), strict=True):
        assert len(sequence) == length
        assert sequence[length // 2 - 8 : length // 2 + 9] == reference, name
