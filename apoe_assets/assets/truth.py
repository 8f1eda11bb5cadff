"""Demo only: the simulator's planted truth beside what the pipeline recovered.

A study that names ``truth:`` (the bundled demo) gets two more assets, and no other: the
observable source ``planted_truth`` (the truth folder, fingerprinted) and ``truth_recovery``,
its only reader, which sets the planted variance shares and causal variants beside the stored
scans and the model comparison. No real asset takes the truth as an input, so nothing the
pipeline computes can lean on it; a real study has neither asset.
"""

from pathlib import Path

import dagster as dg
import pandas as pd

from apoe_assets.assets.comparison import stored_partitions
from apoe_assets.assets.metadata import preview, scalars
from apoe_assets.assets.plots import embedded, png, recovery_figure
from apoe_assets.assets.sources import GROUP as SOURCES_GROUP
from apoe_assets.genomics.fingerprint import fingerprint
from apoe_assets.genomics.truth import (
    CAUSAL_FILE,
    GENES_FILE,
    PlantedTruth,
    read_truth,
    recovery_table,
)
from apoe_assets.ml.enformer_models import ENFORMER_MODELS
from apoe_assets.ml.folds import FOLD
from apoe_assets.ml.gene_models import MODELS
from apoe_assets.ml.stacking import STACK
from apoe_assets.resources.storage import ALLOW_MISSING, WithFigures
from apoe_assets.resources.study import StudyResource
from apoe_assets.study import Study

GROUP = "demo_truth"
PLANTED_TRUTH = dg.AssetKey("planted_truth")
READER = "planted_truth_reader"
"""Resource key of the input manager that reads the truth folder."""
RECOVERY_VERSION = "1"


class PlantedTruthReader(dg.ConfigurableIOManager):
    """Reads the study's truth folder as the ``planted_truth`` input; writes nothing (the
    simulator wrote it)."""

    folder: str

    def load_input(self, context: dg.InputContext) -> PlantedTruth:
        return read_truth(Path(self.folder))

    def handle_output(self, context: dg.OutputContext, obj: object) -> None:
        raise NotImplementedError("planted_truth is written by the simulator, never here")


def truth_resources(study: Study) -> dict[str, PlantedTruthReader]:
    """The reader of the study's truth folder (none without ``truth:``)."""
    return {} if study.truth is None else {READER: PlantedTruthReader(folder=str(study.truth))}


def truth_assets(study: Study) -> list:
    """``planted_truth`` and ``truth_recovery`` for a study with ``truth:``; else none."""
    if study.truth is None:
        return []

    @dg.observable_source_asset(key=PLANTED_TRUTH, group_name=SOURCES_GROUP,
                                io_manager_key=READER, kinds={"file"},
                                description="Demo only: the simulator's planted truth "
                                            "(study field truth:); read by truth_recovery "
                                            "alone.")
    def planted_truth(study: StudyResource) -> dg.DataVersion:
        """Fingerprint the planted variance shares and causal variants."""
        folder = study.load().truth
        return dg.DataVersion("-".join(fingerprint(folder / name).digest
                                       for name in (GENES_FILE, CAUSAL_FILE)))

    @dg.asset(group_name=GROUP, kinds={"pandas"}, code_version=RECOVERY_VERSION,
              ins={"planted_truth": dg.AssetIn(PLANTED_TRUTH),
                   "cis_eqtl": dg.AssetIn(metadata={ALLOW_MISSING: True})})
    def truth_recovery(context: dg.AssetExecutionContext, planted_truth: PlantedTruth,
                       gene_annotation: pd.DataFrame, cis_eqtl: object,
                       model_comparison: pd.DataFrame) -> WithFigures:
        """Per gene, the planted shares of expression variance (SNPs, Enformer component,
        other genes) beside the out-of-fold R² recovered (best genotype model, best Enformer
        model, the stack), and where the planted causal variants rank in the all-samples
        cis-eQTL scan (1: the lead variant)."""
        tables = stored_partitions(cis_eqtl, context.asset_partition_keys_for_input("cis_eqtl"))
        scans = {gene: table[table[FOLD].isna()] for gene, table in tables.items()}
        table = recovery_table(planted_truth, gene_annotation, scans, model_comparison,
                               MODELS, ENFORMER_MODELS, STACK)
        missing = sorted(set(gene_annotation["partition_key"]) - set(scans))
        if missing:
            context.log.warning(f"no cis_eqtl for {', '.join(missing)}: left out")
        with_snps = table[table["n_causal"] > 0]
        image = png(recovery_figure(table, "Planted vs recovered (demo truth)"))
        context.add_output_metadata({
            "genes": len(table),
            **scalars({
                "genes_with_causal_snps": len(with_snps),
                "lead_is_causal": int(with_snps["lead_is_causal"].sum()),
                "causal_in_top_5": int((with_snps["best_causal_rank"] <= 5).sum()),
                "corr_h2_vs_r2_genotype": table["h2_realised"].corr(table["r2_genotype"]),
                "corr_enformer_vs_r2_enformer": table["enformer_realised"].corr(
                    table["r2_enformer"]),
            }),
            "recovery": dg.MetadataValue.md(table.round(4).to_markdown(index=False)),
            "recovery_plot": embedded(image, "planted vs recovered"),
            "preview": preview(table),
        })
        return WithFigures(table, {"recovery_plot": image})

    return [planted_truth, truth_recovery]
