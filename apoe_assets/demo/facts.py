"""The real hg38 facts the demo study keeps: chr19 length, the APOE region, its genes, the
APOE-defining SNPs. Everything else in the demo is synthetic."""

from __future__ import annotations

from dataclasses import dataclass

CHROM = "chr19"
CHROM_LENGTH = 58_617_616
REGION_FIRST = 44_400_000
"""First base of the simulated region (1-based inclusive)."""
REGION_LAST = 45_410_000
"""Last base of the simulated region (1-based inclusive)."""
REGION_LENGTH = REGION_LAST - REGION_FIRST + 1


@dataclass(frozen=True)
class GeneFact:
    """A gene's real identity and transcription start (hg38, 1-based; gene end on − strand)."""

    symbol: str
    gene_id: str
    strand: str
    tss: int


@dataclass(frozen=True)
class SnpFact:
    """A named SNP at its hg38 position (1-based) with its REF and ALT bases."""

    rsid: str
    pos: int
    ref: str
    alt: str
    alt_frequency: float
    """Target ALT frequency, European-like."""


GENES: tuple[GeneFact, ...] = (
    GeneFact("ZNF229", "ENSG00000278318", "-", 44_448_578),
    GeneFact("ZNF180", "ENSG00000167384", "-", 44_500_524),
    GeneFact("CEACAM20", "ENSG00000273777", "-", 44_529_788),
    GeneFact("IGSF23", "ENSG00000216588", "+", 44_613_630),
    GeneFact("PVR", "ENSG00000073008", "+", 44_643_798),
    GeneFact("CEACAM19", "ENSG00000186567", "+", 44_662_278),
    GeneFact("CEACAM16", "ENSG00000213892", "+", 44_699_151),
    GeneFact("BCL3", "ENSG00000069399", "+", 44_747_705),
    GeneFact("CBLC", "ENSG00000142273", "+", 44_777_869),
    GeneFact("BCAM", "ENSG00000187244", "+", 44_809_059),
    GeneFact("NECTIN2", "ENSG00000130202", "+", 44_846_175),
    GeneFact("TOMM40", "ENSG00000130204", "+", 44_890_569),
    GeneFact("APOE", "ENSG00000130203", "+", 44_905_754),
    GeneFact("APOC1", "ENSG00000130208", "+", 44_914_247),
    GeneFact("APOC4", "ENSG00000267467", "+", 44_942_238),
    GeneFact("APOC2", "ENSG00000234906", "+", 44_946_035),
    GeneFact("CLPTM1", "ENSG00000104853", "+", 44_954_585),
    GeneFact("RELB", "ENSG00000104856", "+", 45_001_430),
    GeneFact("CLASRP", "ENSG00000104859", "+", 45_039_040),
    GeneFact("ZNF296", "ENSG00000170684", "-", 45_076_588),
    GeneFact("GEMIN7", "ENSG00000142252", "+", 45_079_195),
    GeneFact("PPP1R37", "ENSG00000104866", "+", 45_091_396),
    GeneFact("NKPD1", "ENSG00000179846", "-", 45_158_737),
    GeneFact("TRAPPC6A", "ENSG00000007255", "-", 45_178_237),
    GeneFact("BLOC1S3", "ENSG00000189114", "+", 45_178_745),
    GeneFact("EXOC3L2", "ENSG00000283632", "-", 45_245_431),
    GeneFact("CKM", "ENSG00000104879", "-", 45_322_977),
    GeneFact("KLC3", "ENSG00000104892", "+", 45_333_434),
    GeneFact("ERCC2", "ENSG00000104884", "-", 45_370_918),
    GeneFact("PPP1R13L", "ENSG00000104881", "-", 45_406_349),
)

FOCUS_GENE = "APOE"
RS429358 = SnpFact("rs429358", 44_908_684, "T", "C", 0.14)
"""ε4-defining SNP: C marks ε4."""
RS7412 = SnpFact("rs7412", 44_908_822, "C", "T", 0.08)
"""ε2-defining SNP: T marks ε2."""
APOE_SNPS: tuple[SnpFact, ...] = (RS429358, RS7412)
