"""bench.serving's command line refuses what it cannot run before it sets anything up."""

from __future__ import annotations

import pytest

from bench.serving import main


@pytest.mark.parametrize("rate", ["0", "-5"])
def test_a_given_fused_maximum_must_be_positive(rate, capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--only", "fused", "--fused-max-rps", rate])
    assert exit_.value.code == 2
    assert "--fused-max-rps must be positive" in capsys.readouterr().err
