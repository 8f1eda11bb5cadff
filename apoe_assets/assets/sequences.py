"""Personal haplotype sequences per gene, as `bcftools consensus -H 1pIu/2pIu` writes them."""

import os
import shutil
import tempfile
import time
import warnings
from pathlib import Path

import dagster as dg
import pandas as pd

from apoe_assets.assets.metadata import preview
from apoe_assets.assets.progress import throttled
from apoe_assets.genomics.consensus import SKIP_REASONS
from apoe_assets.genomics.fasta import ReferenceGenome
from apoe_assets.genomics.genotypes import GenotypeMatrix
from apoe_assets.genomics.loci import variants_in
from apoe_assets.genomics.personal import (
    SEQUENCES_VERSION,
    SequenceFolder,
    write_personal_sequences,
)
from apoe_assets.partitions import StudyPartitions
from apoe_assets.resources.storage import ByPartition, by_partition
from apoe_assets.resources.study import StudyResource
from apoe_assets.stage_settings import sequence_spec
from apoe_assets.study import Study

EXAMPLES = 5
GROUP = "genes"


def gene_sequences(context: dg.AssetExecutionContext, config: Study, reference: ReferenceGenome,
                   gene: pd.Series, key: str, genotypes: GenotypeMatrix
                   ) -> tuple[SequenceFolder, dict]:
    """One gene's personal sequences in a new temporary folder (removed again if writing
    fails) and its materialisation metadata."""
    spec = sequence_spec(config, gene)
    window = spec.window
    bases = reference.fetch(window)
    # only the variants that can touch the window (a deletion may start before it)
    genotypes = genotypes.window(max(window.start - genotypes.longest_ref + 1, 0), window.end)
    folder = SequenceFolder(Path(tempfile.mkdtemp(prefix="apoe-sequences-")))
    folder.path.chmod(0o755)  # mkdtemp makes it private; the stored folder is not
    started = time.perf_counter()

    @throttled
    def progress(done: int, total: int) -> None:
        rate = done / max(time.perf_counter() - started, 1e-9)
        context.log.info(f"{key}: {done}/{total} samples ({rate:,.0f} samples/s)")

    try:
        manifest = write_personal_sequences(folder.path, bases, genotypes, spec,
                                            threads=os.cpu_count() or 1, progress=progress)
    except BaseException:
        shutil.rmtree(folder.path, ignore_errors=True)
        raise
    seconds = time.perf_counter() - started
    in_window = variants_in(genotypes, window.start, window.end)
    het = genotypes.heterozygous()[in_window]
    unphased = het & ~genotypes.phased[in_window]
    tss_checked = manifest["tss_matches_reference"].dropna()
    return folder, {
        "window": window.to_region(),
        "tss": int(gene["tss"]) + 1,
        "haplotypes": len(manifest),
        "unique_sequences": int(manifest["hash"].nunique()),
        "unique_fraction": float(manifest["hash"].nunique() / len(manifest)),
        "variants_in_window": int(in_window.sum()),
        "variants_applied_mean": float(manifest["variants_applied"].mean()),
        **{f"skipped_{r}": int(manifest[f"skipped_{r}"].sum()) for r in SKIP_REASONS},
        "unphased_heterozygous_fraction": float(unphased.sum() / max(het.sum(), 1)),
        "tss_verified": int(tss_checked.sum()),
        "tss_mismatches": int((tss_checked == 0).sum()),
        "tss_untestable": int(manifest["tss_matches_reference"].isna().sum()),
        "fasta_bytes": (folder.fasta).stat().st_size,
        "seconds": round(seconds, 2),
        "haplotypes_per_second": round(len(manifest) / max(seconds, 1e-9)),
        "missing_policy": spec.missing,
        "snps_only": spec.snps_only,
        "preview": preview(manifest.drop(columns=["hash"])),
    }


def sequence_assets(parts: StudyPartitions) -> list[dg.AssetsDefinition]:
    """The ``personal_sequences`` asset, partitioned by gene, up to ``genes_per_run`` genes a
    run."""

    @dg.asset(
        group_name=GROUP,
        partitions_def=parts.genes,
        ins={"genotypes": dg.AssetIn(partition_mapping=parts.gene_chromosome)},
        code_version=SEQUENCES_VERSION,
        kinds={"fasta"},
        backfill_policy=parts.gene_backfill,
    )
    def personal_sequences(context: dg.AssetExecutionContext, study: StudyResource,
                           gene_annotation: pd.DataFrame, genotypes: object) -> ByPartition:
        """Both haplotypes of every sample over the gene's model window (plus a flank for
        re-centring on the TSS): a bgzipped, faidx-indexed FASTA with records
        ``{sample}_h1``/``{sample}_h2`` and a manifest with hashes, counts and TSS indexes.
        A run may cover several genes: each chromosome is loaded once."""
        config = study.load()
        chromosomes = by_partition(genotypes, context.asset_partition_keys_for_input(
            "genotypes"))
        annotation = gene_annotation.set_index("partition_key")
        folders = ByPartition()
        reference = ReferenceGenome(config.reference_fasta)
        try:
            for key in context.partition_keys:
                gene = annotation.loc[key]
                folders[key], metadata = gene_sequences(context, config, reference, gene, key,
                                                        chromosomes[gene["chrom"]])
                context.add_asset_metadata(metadata, partition_key=key)
        except BaseException:  # the genes written so far were never handed to storage
            for folder in folders.values():
                shutil.rmtree(folder.path, ignore_errors=True)
            raise
        finally:
            reference.close()
        return folders

    return [personal_sequences]


def sequence_checks(parts: StudyPartitions) -> list[dg.AssetChecksDefinition]:
    """The checks of ``personal_sequences``; each re-reads the stored output."""
    with warnings.catch_warnings():  # partitioned checks are a Dagster preview feature
        warnings.simplefilter("ignore", dg.PreviewWarning)

        @dg.asset_check(asset="personal_sequences", partitions_def=parts.genes, blocking=True)
        def tss_centred(context: dg.AssetCheckExecutionContext, personal_sequences: object
                        ) -> dg.AssetCheckResult:
            """Every haplotype's TSS index points at the reference TSS context (where no
            variant near the TSS makes that untestable), so re-centring puts the TSS at L/2.
            A run over several genes checks each and passes only if every gene does (Dagster
            records one evaluation for the run; the failing genes are named)."""
            folders = by_partition(personal_sequences, context.partition_keys)
            verified = mismatches = untestable = 0
            wrong, failing = [], []
            for key, folder in folders.items():
                manifest = folder.manifest()
                checked = manifest["tss_matches_reference"].dropna()
                bad = manifest.loc[manifest["tss_matches_reference"] == 0, "record"].tolist()
                verified += int(checked.sum())
                mismatches += len(bad)
                untestable += int(manifest["tss_matches_reference"].isna().sum())
                wrong += bad if len(folders) == 1 else [f"{key}:{r}" for r in bad]
                if bad or len(checked) == 0:
                    failing.append(key)
            metadata = {"verified": verified, "mismatches": mismatches,
                        "untestable": untestable, "examples": ", ".join(wrong[:EXAMPLES]) or "none"}
            if len(folders) > 1:
                metadata["failing_genes"] = ", ".join(failing) or "none"
            return dg.AssetCheckResult(passed=not failing, metadata=metadata)

    return [tss_centred]
