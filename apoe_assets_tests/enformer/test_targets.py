"""Track selection against Enformer's own targets_human.txt."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from apoe_assets.enformer.model import EnformerConfig
from apoe_assets.enformer.targets import (
    COLUMNS,
    DEMO_TRACKS,
    check_head_size,
    demo_targets,
    read_targets,
    resolve_tracks,
    select_tracks,
    track_descriptions,
    write_targets,
)
from apoe_assets_tests.requirements import reference_file


@pytest.fixture(scope="module")
def human() -> pd.DataFrame:
    return read_targets(reference_file("enformer/targets_human.txt"))


def test_reference_counts(human: pd.DataFrame) -> None:
    assert tuple(human.columns) == COLUMNS
    check_head_size(human, EnformerConfig.full().heads["human"])  # 5,313 rows
    assert len(select_tracks(human, "CAGE:")) == 638
    assert len(select_tracks(human, "CHIP:H3K27me3")) == 260
    assert len(select_tracks(human, "DNASE:")) == 674
    assert len(select_tracks(human, ["CAGE:", "DNASE:"])) == 638 + 674


def test_brain_cage(human: pd.DataFrame) -> None:
    brain = select_tracks(human, "CAGE:brain")
    assert 4980 in brain  # Sasse et al. 2023's track
    assert all(d.startswith("CAGE:brain") for d in track_descriptions(human, brain))
    assert track_descriptions(human, [5110])[0].startswith("CAGE:B lymphoblastoid cell line: "
                                                           "GM12878")


def test_indices_regex_and_order(human: pd.DataFrame) -> None:
    picked = select_tracks(human, [5110, "4980", 4980])
    assert picked.tolist() == [4980, 5110]
    regex = select_tracks(human, r"re:^CHIP:H3K27me3:.*K562")
    assert len(regex) >= 1 and set(regex) <= set(select_tracks(human, "CHIP:H3K27me3"))
    assert np.all(np.diff(select_tracks(human, "CAGE:")) > 0)


def test_bad_selectors(human: pd.DataFrame) -> None:
    with pytest.raises(ValueError, match="no track description matches 'CAGE:nowhere'"):
        select_tracks(human, "CAGE:nowhere")
    with pytest.raises(ValueError, match="out of range"):
        select_tracks(human, 5313)
    with pytest.raises(ValueError, match="head predicts 12"):
        check_head_size(human, 12)


def test_demo_targets(tmp_path: Path) -> None:
    table = demo_targets()
    check_head_size(table, EnformerConfig.small().heads["human"])
    assert len(table) == len(DEMO_TRACKS)
    path = write_targets(table, tmp_path / "targets_demo.txt")
    again = read_targets(path)
    pd.testing.assert_frame_equal(again, table, check_dtype=False)
    assert list(select_tracks(again, "CAGE:brain")) == [8]
    assert len(select_tracks(again, "CAGE:")) == 4
    assert path.read_text().splitlines()[0].split("\t") == list(COLUMNS)


def test_bad_table(tmp_path: Path) -> None:
    path = tmp_path / "t.txt"
    path.write_text("index\tdescription\n1\tCAGE:x\n")
    with pytest.raises(ValueError, match="index column"):
        read_targets(path)


def test_resolve_tracks(human: pd.DataFrame, tmp_path: Path) -> None:
    path = reference_file("enformer/targets_human.txt")
    size = EnformerConfig.full().heads["human"]
    assert resolve_tracks(["CAGE:brain", 5110], size, path).tolist() == \
        sorted({*select_tracks(human, "CAGE:brain"), 5110})
    assert resolve_tracks([3, "1"], 12).tolist() == [1, 3]  # indices need no table
    with pytest.raises(ValueError, match="'CAGE:brain' is a description: it needs a targets"):
        resolve_tracks("CAGE:brain", 12)
    # a targets file whose row count differs from the head size
    with pytest.raises(ValueError, match="has 5313 tracks but the model's 'human' head "
                                         "predicts 12"):
        resolve_tracks("CAGE:brain", 12, path)
    short = tmp_path / "short.txt"
    write_targets(demo_targets().iloc[:5], short)
    with pytest.raises(ValueError, match=r"has 5 tracks .* predicts 12"):
        resolve_tracks(0, EnformerConfig.small().heads["human"], short)
    assert resolve_tracks("CAGE:", 12, demo_targets()).tolist() == [8, 9, 10, 11]
