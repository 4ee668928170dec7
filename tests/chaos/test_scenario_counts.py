"""Which runs a fault's window charges with the lost/doubled tokens it sees."""

from types import SimpleNamespace

from chaos.ledger import RunView, ThreadView
from chaos.scenarios import overlapping, window_tokens


def socket_with(*runs: RunView) -> SimpleNamespace:
    view = ThreadView()
    view.runs = {run.run_id: run for run in runs}
    return SimpleNamespace(view=view)


def ended(run_id, first_seen, completed_at, built, final) -> RunView:
    return RunView(
        run_id,
        first_seen=first_seen,
        completed_at=completed_at,
        built_text=built,
        final_text=final,
    )


def test_only_runs_alive_during_the_window_are_charged():
    sock = socket_with(
        ended("before", 0.0, 1.0, "t0", "t0 t1"),  # ended before the fault
        ended("during", 2.0, 6.0, "t0 t2 t2", "t0 t1 t2"),
        ended("after", 9.0, 10.0, "t0 t0", "t0"),  # started after it
        RunView("open", first_seen=4.0),  # still streaming: not judged yet
    )
    assert [r.run_id for r in overlapping(sock, 3.0, 5.0)] == ["during", "open"]
    assert window_tokens(sock, 3.0, 5.0) == (1, 1)


def test_a_run_still_open_at_the_window_is_charged_once_it_ends():
    sock = socket_with(RunView("long", first_seen=0.0))
    assert window_tokens(sock, 5.0, 6.0) == (0, 0)
    sock.view.runs["long"] = ended("long", 0.0, 20.0, "t0 t1", "t0 t1 t2")
    assert window_tokens(sock, 5.0, 6.0) == (1, 0)
