"""Reading a written demo study back with independent tools (cyvcf2, pandas, gzip)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import cyvcf2
import numpy as np
import pandas as pd
import yaml


def snapshot(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder``, by relative path."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@dataclass
class Vcf:
    """A VCF read whole: per-record fields and the ``[records, samples, 2]`` allele array
    (−1 missing) with its ``[records, samples]`` phase flags."""

    samples: list[str]
    chrom: list[str]
    pos: np.ndarray
    ids: list[str]
    ref: list[str]
    alts: list[list[str]]
    alleles: np.ndarray
    phased: np.ndarray
    header: str

    def row(self, pos: int) -> int:
        return int(np.flatnonzero(self.pos == pos)[0])

    def dosage(self, variant_id: str, samples: list[str]) -> np.ndarray:
        """First-ALT dosage of ``chrom:pos:ref:alt`` for ``samples`` (NaN where missing)."""
        _, pos, ref, alt = variant_id.split(":")
        i = self.row(int(pos))
        assert (self.ref[i], self.alts[i]) == (ref, [alt]), variant_id
        index = [self.samples.index(s) for s in samples]
        alleles = self.alleles[i, index]
        dosage = (alleles == 1).sum(axis=1).astype(np.float64)
        dosage[(alleles < 0).any(axis=1)] = np.nan
        return dosage


def read_vcf(path: Path) -> Vcf:
    vcf = cyvcf2.VCF(str(path))
    fields: dict[str, list] = {k: [] for k in ("chrom", "pos", "ids", "ref", "alts", "gt")}
    for record in vcf:
        fields["chrom"].append(record.CHROM)
        fields["pos"].append(record.POS)
        fields["ids"].append(record.ID or ".")
        fields["ref"].append(record.REF)
        fields["alts"].append(list(record.ALT))
        fields["gt"].append(record.genotype.array())
    header = vcf.raw_header
    samples = list(vcf.samples)
    vcf.close()
    gt = np.stack(fields["gt"])
    return Vcf(samples, fields["chrom"], np.array(fields["pos"]), fields["ids"],
               fields["ref"], fields["alts"], gt[..., :2].astype(np.int64),
               gt[..., 2].astype(bool), header)


def read_expression(study: Path) -> pd.DataFrame:
    return pd.read_csv(study / "expression/expression.bed.gz", sep="\t")


def read_covariates(study: Path) -> pd.DataFrame:
    return pd.read_csv(study / "expression/covariates.tsv", sep="\t").set_index("ID")


def read_truth(study: Path, name: str) -> pd.DataFrame:
    return pd.read_csv(study / "truth" / name, sep="\t", dtype={"rsid": str})


def read_study_yaml(study: Path) -> dict:
    return yaml.safe_load((study / "study.yaml").read_text())
