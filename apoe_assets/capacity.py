"""What a study costs to run: Enformer passes, device-hours, CPU-hours, storage and money.

    python -m apoe_assets.capacity --study study.yaml --gpu h100 [--samples N] [--genes G]

For N samples × G genes at the study's window (its Enformer's input length):

- **Forward passes**: G × 2N × the distinct fraction (haplotypes identical over the model
  window are predicted once, ``enformer_predictions``). Measured from the study's stored
  ``personal_sequences`` manifests when there are any; else :data:`DISTINCT_FRACTION` (1: a real
  196-kb window of real genomes is nearly always distinct).
- **SNP-effect passes**: per gene one reference and one ALT per variant in the window, an ALT
  by the incremental path (stem and tower over 12 bins, then transformer and heads).
- **FLOPs per pass**: XLA's cost analysis of this project's model at the study's size.
- **Throughput**: the CPU's FLOP/s is measured (``bench_enformer.py``, full model, this
  project's 2-core machine: :data:`CPU_SECONDS_PER_FULL_FORWARD`); a GPU's is its dense bf16
  peak (datasheet) × :data:`GPU_UTILISATION`, a projection until a GPU run measures it.
- **Genotype models** (cis-eQTL scans, P+T, elastic net, nested folds): CPU-seconds per gene
  from ``bench_gene_models.py`` (:data:`GENE_MODEL_SECONDS` for 838 samples × 15,940 window
  variants), scaled by samples × variants.
- **Storage**: personal sequences (bgzipped FASTA, about a third of a byte per base), Enformer
  predictions (float32, output bins × tracks kept, per distinct haplotype) and SNP effects
  (a row per variant and a float32 per track).
- **Cost**: device-hours and CPU-hours at the prices given (defaults are assumptions, printed).
"""

from __future__ import annotations

import argparse
import functools
import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

DISTINCT_FRACTION = 1.0
"""Distinct haplotypes per gene / (2 × samples) without a measurement."""
CPU_SECONDS_PER_FULL_FORWARD = 1 / 0.080
"""``bench_enformer.py`` full model (C = 1536, 196,608 bp), ours, 2 CPU cores: 0.080 seq/s."""
GPU_PEAK_BF16_FLOPS = {"h100": 989e12, "h200": 989e12, "a100": 312e12, "l4": 121e12}
"""Dense bf16 tensor-core peak per GPU (NVIDIA datasheets; H200 computes as H100)."""
GPU_UTILISATION = 0.3
"""Assumed share of the peak a batched Enformer forward reaches (a projection)."""
GENE_MODEL_SECONDS, GENE_MODEL_SAMPLES, GENE_MODEL_VARIANTS = 24.98, 838, 15_940
"""``bench_gene_models.py``: one GTEx-sized gene's genotype models on 2 CPU cores."""
ALT_SLICE_BINS = 12
"""Tower bins an incremental ALT recomputes (``enformer.incremental``)."""
SEQUENCE_BYTES_PER_BASE = 1 / 3
"""Bgzipped FASTA of personal haplotypes (``bench_personal_sequences.py``)."""
EFFECT_BYTES_PER_VARIANT, EFFECT_BYTES_PER_TRACK = 170, 4
"""Stored ``snp_effects`` per variant: its row of effects and ranks (measured on the demo:
192 KB for 1,110 variants and one track, per-gene files included) plus a float32 SAD per
track kept."""
DEFAULT_GPU_PRICE, DEFAULT_CPU_PRICE = 3.0, 0.05
"""Assumed USD per GPU-hour and per CPU core-hour."""


@dataclass(frozen=True)
class Workload:
    """What one study asks of the pipeline."""

    samples: int
    genes: int
    cis_variants: int
    """Variants in a gene's cis window (the genotype models)."""
    model_variants: int
    """Variants inside the Enformer window (the SNP effects)."""
    distinct_fraction: float
    tracks: int
    """Tracks kept per prediction."""


@dataclass(frozen=True)
class ModelCost:
    """FLOPs of one full forward and of one incremental ALT; input and output sizes."""

    forward_flops: float
    alt_flops: float
    sequence_length: int
    output_bins: int


def model_cost(config) -> ModelCost:
    """XLA's FLOP count of this project's Enformer at ``config``: a full forward, and an ALT
    (transformer and heads, plus stem and tower over :data:`ALT_SLICE_BINS` bins)."""
    import jax
    import jax.numpy as jnp

    from apoe_assets.enformer.model import ALPHABET, build

    apply = build(config).apply
    params = jax.eval_shape(build(config).init, jax.random.key(0),
                            jax.ShapeDtypeStruct((1, config.sequence_length, ALPHABET),
                                                 jnp.float32))

    def flops(stage: str, length: int) -> float:
        x = jax.ShapeDtypeStruct((1, length, ALPHABET), jnp.float32)
        lowered = jax.jit(lambda p, v: apply(p, v, stage=stage)).lower(params, x)
        return float(lowered.cost_analysis()["flops"])

    full = flops("all", config.sequence_length)
    tower = flops("tower", config.sequence_length)
    slice_tower = tower * ALT_SLICE_BINS * config.bin_size / config.sequence_length
    return ModelCost(full, full - tower + slice_tower, config.sequence_length,
                     config.target_length)


@dataclass(frozen=True)
class Plan:
    """The workload's passes, hours, storage and cost on one device kind."""

    forwards: int
    alts: int
    flops: float
    device_hours: float
    device: str
    projected: bool
    gene_model_cpu_hours: float
    storage_bytes: dict[str, float]
    cost: float

    def table(self) -> pd.DataFrame:
        rows = [("Enformer forward passes", f"{self.forwards:,}"),
                ("SNP-effect ALT passes", f"{self.alts:,}"),
                ("FLOPs", f"{self.flops:.3g}"),
                (f"{self.device} hours" + (" (projection)" if self.projected else ""),
                 f"{self.device_hours:,.1f}"),
                ("genotype-model CPU core-hours", f"{self.gene_model_cpu_hours:,.1f}")]
        rows += [(f"storage: {asset}", _size(size)) for asset, size in
                 self.storage_bytes.items()]
        rows.append(("cost (USD)", f"{self.cost:,.0f}"))
        return pd.DataFrame(rows, columns=["quantity", "value"])


def plan(workload: Workload, cost: ModelCost, device: str, flops_per_second: float,
         projected: bool, device_price: float, cpu_price: float) -> Plan:
    """The passes, hours, storage and cost of ``workload`` on a device computing
    ``flops_per_second`` (``device_price`` per hour; CPU core-hours at ``cpu_price``)."""
    forwards = workload.genes * math.ceil(2 * workload.samples * workload.distinct_fraction)
    alts = workload.genes * workload.model_variants
    flops = (forwards + workload.genes) * cost.forward_flops + alts * cost.alt_flops
    device_hours = flops / flops_per_second / 3600
    gene_seconds = GENE_MODEL_SECONDS * (workload.samples / GENE_MODEL_SAMPLES) * (
        workload.cis_variants / GENE_MODEL_VARIANTS)
    cpu_hours = 2 * workload.genes * gene_seconds / 3600  # the benchmark used 2 cores
    storage = {
        "personal_sequences": 2 * workload.samples * workload.genes * cost.sequence_length
        * SEQUENCE_BYTES_PER_BASE,
        "enformer_predictions": forwards * cost.output_bins * workload.tracks * 4,
        "snp_effects": alts * (EFFECT_BYTES_PER_VARIANT
                               + EFFECT_BYTES_PER_TRACK * workload.tracks),
    }
    total = device_hours * device_price + cpu_hours * cpu_price
    return Plan(forwards, alts, flops, device_hours, device, projected, cpu_hours, storage,
                total)


def _size(n: float) -> str:
    units = ("B", "KB", "MB", "GB", "TB")
    for unit in units[:-1]:
        if n < 1000:
            return f"{n:,.1f} {unit}"
        n /= 1000
    return f"{n:,.1f} {units[-1]}"


def measured_distinct_fraction(storage_root: Path) -> float | None:
    """Distinct haplotypes / haplotypes over the stored ``personal_sequences`` manifests (None
    when none is stored): an upper bound, as haplotypes that differ only outside the model
    window are one model input too."""
    from apoe_assets.enformer.predictions import distinct_sequences
    from apoe_assets.genomics.personal import MANIFEST_NAME

    distinct = total = 0
    for path in sorted(Path(storage_root).glob(f"personal_sequences/*/{MANIFEST_NAME}")):
        manifest = pd.read_parquet(path)
        _, representatives = distinct_sequences(manifest)
        distinct, total = distinct + len(representatives), total + len(manifest)
    return distinct / total if total else None


def count_variants(vcf, gene: pd.Series, flanks: tuple[int, ...]) -> tuple[int, ...]:
    """Variants of ``vcf`` (an open, indexed cyvcf2 file) within each of ``flanks`` bp of the
    gene's TSS, from one query over the widest."""
    contig = next((c for c in vcf.seqnames if c.removeprefix("chr") ==
                   str(gene["chrom"]).removeprefix("chr")), str(gene["chrom"]))
    tss, widest = int(gene["tss"]), max(flanks)
    distances = [abs(v.POS - 1 - tss)
                 for v in vcf(f"{contig}:{max(tss - widest, 0) + 1}-{tss + widest}")]
    return tuple(sum(d <= flank for d in distances) for flank in flanks)


def study_config(study):
    """The Enformer configuration of the study's weights (the published model without)."""
    from apoe_assets.enformer.convert import load_params
    from apoe_assets.enformer.model import EnformerConfig

    return load_params(study.enformer.weights)[0] if study.enformer.weights else EnformerConfig()


def study_workload(study, config, **given: float | None) -> Workload:
    """The workload of ``study`` run with the Enformer ``config``; each :class:`Workload`
    field in ``given`` (not None) replaces the study's own: its samples and genes, the mean
    variants per window over its genes, the distinct fraction measured from its stored
    manifests (else :data:`DISTINCT_FRACTION`), the tracks it keeps."""
    from apoe_assets.enformer.targets import resolve_tracks
    from apoe_assets.genomics.vcf import vcf_samples

    given = {k: v for k, v in given.items() if v is not None}
    table = study.gene_table

    @functools.cache
    def mean_variants() -> tuple[int, int]:
        """Mean variants a gene in its cis window and in its Enformer window (each VCF opened
        once, each gene read once)."""
        from apoe_assets.genomics.vcf import open_vcf

        files = {chrom: open_vcf(study.genotype_file(chrom), need_index=True)
                 for chrom in {str(c) for c in table["chrom"]}}
        counts = [count_variants(files[str(g["chrom"])], g,
                                 (study.cis_window, config.sequence_length // 2))
                  for _, g in table.iterrows()]
        return tuple(round(sum(c[i] for c in counts) / len(counts)) for i in range(2))

    def tracks() -> int:
        head_size = dict(config.output_heads)["human"]
        settings = study.enformer
        return (len(resolve_tracks(settings.tracks, head_size, settings.targets))
                if settings.tracks else head_size)

    def distinct() -> float:
        measured = measured_distinct_fraction(Path(study.storage_root))
        return DISTINCT_FRACTION if measured is None else measured

    defaults = {
        "samples": lambda: len(study.samples or vcf_samples(study.genotype_files()[0])),
        "genes": lambda: len(table),
        "cis_variants": lambda: mean_variants()[0],
        "model_variants": lambda: mean_variants()[1],
        "distinct_fraction": distinct,
        "tracks": tracks,
    }
    return Workload(**{name: given[name] if name in given else compute()
                       for name, compute in defaults.items()})


def main(argv: list[str] | None = None) -> None:
    """Print the study's capacity plan on a GPU kind (projection) and on this CPU."""
    from apoe_assets.enformer.model import EnformerConfig
    from apoe_assets.study import load_study

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", help="study YAML (default: $APOE_STUDY or the demo)")
    parser.add_argument("--gpu", choices=sorted(GPU_PEAK_BF16_FLOPS), default="h100")
    parser.add_argument("--full-model", action="store_true",
                        help="plan the published Enformer (196,608 bp) whatever the study's")
    for name, kind, what in (
            ("samples", int, "samples"), ("genes", int, "genes"),
            ("cis-variants", int, "variants per gene's cis window"),
            ("model-variants", int, "variants per gene's Enformer window"),
            ("distinct-fraction", float, "distinct haplotypes / (2 × samples)"),
            ("tracks", int, "tracks kept per prediction")):
        parser.add_argument(f"--{name}", type=kind, help=f"plan for these {what} instead")
    parser.add_argument("--gpu-price", type=float, default=DEFAULT_GPU_PRICE,
                        help="USD per GPU-hour (default %(default)s, an assumption)")
    parser.add_argument("--cpu-price", type=float, default=DEFAULT_CPU_PRICE,
                        help="USD per CPU core-hour (default %(default)s, an assumption)")
    args = parser.parse_args(argv)
    study = load_study(args.study)
    given = {name: getattr(args, name) for name in (
        "samples", "genes", "cis_variants", "model_variants", "distinct_fraction",
        "tracks")}
    config = EnformerConfig() if args.full_model else study_config(study)
    workload = study_workload(study, config, **given)
    cost = model_cost(config)
    full = model_cost(EnformerConfig()) if config != EnformerConfig() else cost
    cpu_flops = full.forward_flops / CPU_SECONDS_PER_FULL_FORWARD
    print(f"study {study.name}: {workload.samples:,} samples × {workload.genes:,} genes, "
          f"{config.sequence_length:,}-bp window, {workload.tracks} track(s); "
          f"{workload.cis_variants:,} cis and {workload.model_variants:,} in-window "
          f"variants a gene; distinct fraction {workload.distinct_fraction:.3f}; "
          f"{cost.forward_flops:.3g} FLOPs a forward, {cost.alt_flops:.3g} an ALT; GPU at "
          f"{GPU_UTILISATION:.0%} of its bf16 peak, ${args.gpu_price}/GPU-hour, "
          f"${args.cpu_price}/core-hour (assumptions)")
    for device, flops, projected, price in (
            (args.gpu.upper(), GPU_PEAK_BF16_FLOPS[args.gpu] * GPU_UTILISATION, True,
             args.gpu_price),
            ("CPU (2 cores, measured at full size)", cpu_flops, False, 2 * args.cpu_price)):
        print(plan(workload, cost, device, flops, projected, price, args.cpu_price)
              .table().to_markdown(index=False))


if __name__ == "__main__":
    main()
