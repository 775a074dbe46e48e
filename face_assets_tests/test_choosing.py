"""How the clustering sweep chooses a default: the best F at the precision floor, where a
difference of a few faces is no reason to move a default."""

from dataclasses import replace

from face_assets.core.clustering.params import ClusterParams
from face_assets_devtools.choosing import choose, setting


def _row(params: ClusterParams, f: float, pair_f: float = 0.99) -> dict[str, object]:
    return {**setting(params), "bcubed_f": f, "pair_f": pair_f}


def test_a_setting_within_the_tie_of_the_best_f_does_not_move_a_default() -> None:
    defaults = ClusterParams()
    other = replace(defaults, split_threshold=0.72)
    rows = [_row(defaults, 0.97552), _row(other, 0.97556)]
    assert choose(rows, 0.0005)["split"] == defaults.split_threshold
    assert choose(rows, 0.0)["split"] == 0.72  # no tie: the best F


def test_a_gain_beyond_the_tie_moves_a_default() -> None:
    defaults = ClusterParams()
    rows = [_row(defaults, 0.975), _row(replace(defaults, pair_threshold=0.6), 0.977)]
    assert choose(rows, 0.0005)["pair"] == 0.6


def test_settings_that_give_the_same_persons_go_to_the_stricter_merge_link() -> None:
    defaults = ClusterParams()
    rows = [_row(replace(defaults, merge_link=link), 0.975) for link in (-1.0, 0.45, 0.5, 0.55)]
    assert choose(rows, 0.0005)["mlink"] == 0.55
