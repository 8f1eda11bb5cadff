"""Tiny, hand-checkable studies for tests: every file written from a few seeded lines."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pysam
import yaml

from apoe_assets.genomics.bgzf import write_bgzf
from apoe_assets.genomics.fasta import write_indexed_fasta

CONTIG_LENGTH = 20_000
SAMPLES = ["s1", "s2", "s3", "s4", "s5", "s6"]
GENES = [  # gene_id, symbol, 1-based start, end, strand (TSS = start on +, end on -)
    ("ENSG00000000001", "GENE_A", 5_000, 6_000, "+"),
    ("ENSG00000000002", "GENE_B", 13_000, 14_000, "-"),
]


@dataclass
class Record:
    """One VCF line: 1-based POS, ALT alleles, a GT string per sample; REF from the reference
    unless given."""

    pos: int
    alts: list[str]
    genotypes: list[str]
    ref: str | None = None
    ref_length: int = 1


def reference_sequence(seed: int = 7, length: int = CONTIG_LENGTH) -> bytes:
    """A seeded random ACGT sequence."""
    rng = np.random.default_rng(seed)
    return bytes(rng.choice(np.frombuffer(b"ACGT", np.uint8), length).tobytes())


def default_records(reference: bytes) -> list[Record]:
    """A mix of what VCFs hold: SNVs, a multi-allelic site, an indel pair, missing and
    unphased genotypes."""
    return [
        Record(4_990, ["*"], ["0|0"] * 6),  # replaced below with a real ALT
        Record(5_001, ["A"], ["0|1", "1|1", "0|0", "1|0", "0|1", "0|0"]),
        Record(5_200, ["G", "T"], ["1|2", "0|0", "2|2", "0|1", "./.", "1/0"]),
        Record(5_400, ["A"], ["0|0", "0|1", "1|1", "0|1", "0|0", "1|0"], ref_length=3),
        Record(6_000, ["ACGT"], ["0|1", "0|0", "0|0", "1|1", "0|1", "0/1"]),
        Record(13_500, ["C"], ["1|1", "0|1", "0|0", "0|0", "1|0", "0|1"]),
        Record(13_999, ["G"], ["0|1", "1|0", "0|1", "0|0", "0|0", "1|1"]),
    ]


def _alt_for(ref_base: str) -> str:
    return "C" if ref_base != "C" else "G"


def vcf_text(records: list[Record], reference: bytes, contig: str = "1",
             samples: list[str] = SAMPLES) -> str:
    """VCF text for ``records`` (REF filled from ``reference``; ALTs equal to REF replaced)."""
    lines = [
        "##fileformat=VCFv4.2",
        f"##contig=<ID={contig},length={len(reference)}>",
        '##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">',
        "\t".join(["#CHROM", "POS", "ID", "REF", "ALT", "QUAL", "FILTER", "INFO", "FORMAT",
                   *samples]),
    ]
    for rec in records:
        ref = rec.ref or reference[rec.pos - 1 : rec.pos - 1 + rec.ref_length].decode()
        alts = []
        for alt in rec.alts:
            if alt == "*" or (len(alt) == len(ref) == 1 and alt == ref):
                alt = _alt_for(ref)
            if len(alt) > 1 and len(ref) == 1:  # insertion: anchor on REF
                alt = ref + alt[1:]
            if len(ref) > 1 and len(alt) == 1:  # deletion: anchor on REF
                alt = ref[0]
            alts.append(alt)
        lines.append("\t".join([contig, str(rec.pos), ".", ref, ",".join(alts), ".", "PASS",
                                ".", "GT", *rec.genotypes]))
    return "\n".join(lines) + "\n"


def write_vcf(path: Path, text: str, index: bool = True) -> Path:
    """Write VCF text bgzipped (and tabix-indexed unless told not to)."""
    write_bgzf(path, text.encode())
    if index:
        pysam.tabix_index(str(path), preset="vcf", force=True)
    return path


@dataclass
class TinyStudy:
    """Where a tiny study's files are; ``study`` is the YAML file."""

    folder: Path
    reference: bytes
    records: list[Record] = field(default_factory=list)

    @property
    def study(self) -> Path:
        return self.folder / "study.yaml"

    @property
    def vcf(self) -> Path:
        return self.folder / "genotypes.vcf.gz"

    @property
    def storage(self) -> Path:
        return self.folder / "storage"


SECOND_GENE = ("ENSG00000000003", "GENE_C", 8_000, 9_000, "+")


def write_tiny_study(folder: Path, records: list[Record] | None = None,
                     second_chromosome: bool = False, more_samples: int = 0,
                     **study_fields: object) -> TinyStudy:
    """Write a complete tiny study (reference `chr1`, VCF calling it `1`, 2 genes, 6 samples
    plus one expression-only sample) and return its paths. With ``second_chromosome``, a
    contig `chr2` (VCF `2`) carries a third gene, GENE_C. ``more_samples`` adds samples
    `x1`, `x2`, … with seeded random phased genotypes at every record (enough of them for
    the cross-validated eQTL scans, which 6 samples are too few for)."""
    folder.mkdir(parents=True, exist_ok=True)
    reference = reference_sequence()
    records = records if records is not None else default_records(reference)
    chr2_records = [Record(8_100, ["*"], ["0|1", "1|1", "0|0", "1|0", "0|1", "0|0"])]
    samples = SAMPLES + [f"x{i}" for i in range(1, more_samples + 1)]
    if more_samples:
        records, chr2_records = (_with_random_samples(r, more_samples, seed)
                                 for seed, r in enumerate((records, chr2_records)))
    contigs = [("chr1", reference)]
    text = vcf_text(records, reference, samples=samples)
    genes = [(*g, "chr1") for g in GENES]
    if second_chromosome:
        chr2 = reference_sequence(seed=8)
        contigs.append(("chr2", chr2))
        text = text.replace("##FORMAT", f"##contig=<ID=2,length={len(chr2)}>\n##FORMAT", 1)
        body = vcf_text(chr2_records, chr2, contig="2", samples=samples).splitlines()[-1]
        text += body + "\n"
        genes.append((*SECOND_GENE, "chr2"))
    write_indexed_fasta(folder / "reference.fa.gz", contigs)
    write_vcf(folder / "genotypes.vcf.gz", text)
    (folder / "genes.tsv").write_text(
        "gene_id\tsymbol\tchrom\tstart\tend\tstrand\n"
        + "".join(f"{g}\t{s}\t{c}\t{a}\t{b}\t{st}\n" for g, s, a, b, st, c in genes))
    rng = np.random.default_rng(3)
    expr_samples = ["s4", "s2", "extra", "s1", "s6", "s3", "s5", *samples[len(SAMPLES):]]
    bed = "\t".join(["#chr", "start", "end", "gene_id", *expr_samples]) + "\n"
    for gene_id, _, start, end, strand, chrom in genes:
        tss0 = start - 1 if strand == "+" else end - 1
        values = "\t".join(f"{v:.4f}" for v in rng.normal(size=len(expr_samples)))
        bed += f"{chrom}\t{tss0}\t{tss0 + 1}\t{gene_id}\t{values}\n"
    write_bgzf(folder / "expression.bed.gz", bed.encode())
    covariates = "ID\t" + "\t".join(expr_samples) + "\n"
    for name in ("sex", "PC1"):
        covariates += name + "\t" + "\t".join(
            f"{v:.3f}" for v in rng.normal(size=len(expr_samples))) + "\n"
    (folder / "covariates.tsv").write_text(covariates)
    fields = {
        "name": "tiny", "seed": 1, "reference_fasta": "reference.fa.gz",
        "genotypes": "genotypes.vcf.gz", "expression": "expression.bed.gz",
        "covariates": "covariates.tsv", "annotation": "genes.tsv",
        "genes": [g[1] for g in genes], "window_length": 1024, "cis_window": 3_000,
        "storage_root": "storage", "mlflow_tracking_uri": "sqlite:///mlflow.db",
        **study_fields,
    }
    (folder / "study.yaml").write_text(yaml.safe_dump(fields, sort_keys=False))
    return TinyStudy(folder, reference, records)


def _with_random_samples(records: list[Record], extra: int, seed: int) -> list[Record]:
    """``records`` with ``extra`` more samples of seeded random phased genotypes."""
    rng = np.random.default_rng(seed)
    return [Record(r.pos, r.alts, [*r.genotypes, *(
        f"{a}|{b}" for a, b in rng.integers(0, len(r.alts) + 1, size=(extra, 2)))],
        r.ref, r.ref_length) for r in records]


def demo_copy(folder: Path, **fields: object) -> Path:
    """The bundled demo study with absolute paths, its own storage and MLflow store under
    ``folder`` (unless ``fields`` name others) and ``fields`` changed; returns the new study
    file."""
    from apoe_assets.study import DEMO_STUDY

    study = yaml.safe_load(DEMO_STUDY.read_text())
    for key in ("reference_fasta", "genotypes", "expression", "covariates", "annotation",
                "truth"):
        if study.get(key):
            study[key] = str(DEMO_STUDY.parent / study[key])
    for key in ("weights", "targets"):
        if study.get("enformer", {}).get(key):
            study["enformer"][key] = str(DEMO_STUDY.parent / study["enformer"][key])
    study.update({"storage_root": str(folder / "storage"),
                  "mlflow_tracking_uri": f"sqlite:///{folder / 'mlflow.db'}", **fields})
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "study.yaml"
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    return path
