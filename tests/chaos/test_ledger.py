"""The chaos harness's bookkeeping: what a client following docs/protocol.md
builds from frames, and the exact lost/doubled counts it is judged by."""

from chaos.ledger import (
    ThreadView,
    TokenCount,
    compare_tokens,
    is_prefix_run,
    numbered_prompt,
    token_indices,
)

RUN = "11111111-1111-1111-1111-111111111111"


def chunk(event_id, index, text, run=RUN):
    return {
        "type": "response",
        "event_id": event_id,
        "run_id": run,
        "stream_index": index,
        "content": text,
    }


def complete(event_id, text, status="completed", run=RUN):
    return {
        "type": "state_complete",
        "event_id": event_id,
        "run_id": run,
        "content": {"text": text, "status": status, "error": None},
    }


def snapshot(last_event_id, runs=(), messages=(), state="snapshot"):
    return {
        "type": "status",
        "event_id": None,
        "content": {
            "state": state,
            "last_event_id": last_event_id,
            "runs": list(runs),
            "messages": list(messages),
        },
    }


def test_tokens_are_read_with_or_without_stamps():
    assert token_indices("t0 t1@123 t2@9 ") == [0, 1, 2]
    assert token_indices("at0 t1x t3") == [3]


def test_compare_tokens_counts_lost_and_doubled_exactly():
    reference = numbered_prompt(5)
    assert compare_tokens("t0 t1 t2 t3 t4", reference).exact
    assert compare_tokens("t0 t1 t3", reference) == TokenCount(2, 0)
    assert compare_tokens("t0 t1 t1 t2 t3 t4 t4", reference) == TokenCount(0, 2)
    assert compare_tokens("t0 t2 t2", reference) == TokenCount(3, 1)


def test_is_prefix_run_accepts_a_cut_reply_only_without_holes():
    assert is_prefix_run("t0 t1 t2")
    assert is_prefix_run("")
    assert not is_prefix_run("t0 t2")


def test_chunks_in_order_build_the_reply():
    view = ThreadView()
    view.apply(snapshot(4), 0.0)
    for event_id, index in ((5, 0), (6, 1), (7, 2)):
        view.apply(chunk(event_id, index, f"t{index} "), 1.0)
    view.apply(complete(8, "t0 t1 t2 "), 2.0)
    run = view.runs[RUN]
    assert run.done and run.built_text == "t0 t1 t2 "
    assert compare_tokens(run.built_text, run.final_text).exact
    assert (view.duplicate_events, view.event_gaps, view.chunk_gaps) == (0, 0, 0)


def test_an_event_replayed_twice_is_counted_and_ignored():
    view = ThreadView()
    view.apply(snapshot(0), 0.0)
    view.apply(chunk(1, 0, "t0 "), 0.1)
    view.apply(chunk(1, 0, "t0 "), 0.2)  # delivered again after a resume
    view.apply(chunk(2, 1, "t1 "), 0.3)
    assert view.duplicate_events == 1
    assert view.runs[RUN].text == "t0 t1 "


def test_a_chunk_gap_asks_for_a_snapshot_and_the_snapshot_repairs_it():
    view = ThreadView()
    view.apply(snapshot(0), 0.0)
    view.apply(chunk(1, 0, "t0 "), 0.1)
    assert view.apply(chunk(2, 2, "t2 "), 0.2) == "resync"
    assert view.chunk_gaps == 1
    assert view.apply(chunk(3, 3, "t3 "), 0.3) is None  # waiting for the snapshot
    run = {"run_id": RUN, "text": "t0 t1 t2 t3 ", "next_stream_index": 4}
    view.apply(snapshot(3, runs=[run], state="resynced"), 0.4)
    view.apply(chunk(4, 4, "t4 "), 0.5)
    view.apply(complete(5, "t0 t1 t2 t3 t4 "), 0.6)
    assert view.resyncs == 1
    assert compare_tokens(view.runs[RUN].built_text, numbered_prompt(5)).exact


def test_event_ids_that_skip_ahead_are_a_silent_gap():
    view = ThreadView()
    view.apply(snapshot(0), 0.0)
    view.apply(chunk(1, 0, "t0 "), 0.1)
    view.apply(chunk(3, 1, "t1 "), 0.2)
    assert view.event_gaps == 1


def test_events_after_a_redis_restart_before_the_resync_show_as_lost_tokens():
    # Event ids start again from 1: until the resynced snapshot arrives they look
    # like duplicates; if the snapshot never came, the built text would be short.
    view = ThreadView()
    view.apply(snapshot(10), 0.0)
    view.apply(chunk(11, 0, "t0 "), 0.1)
    view.apply(chunk(1, 1, "t1 "), 0.2)
    view.apply(complete(2, "t0 t1 "), 0.3)
    assert view.duplicate_events == 2
    assert not view.runs[RUN].done
    view.apply(
        snapshot(
            2,
            messages=[
                {
                    "role": "assistant",
                    "run_id": RUN,
                    "text": "t0 t1 ",
                    "status": "completed",
                }
            ],
            state="resynced",
        ),
        0.4,
    )
    run = view.runs[RUN]
    assert run.done and run.status == "completed"
    assert compare_tokens(run.built_text, "t0 t1 ").exact


def test_a_stale_chunk_below_the_next_index_is_ignored():
    view = ThreadView()
    run = {"run_id": RUN, "text": "t0 t1 ", "next_stream_index": 2}
    view.apply(snapshot(5, runs=[run]), 0.0)
    view.apply(chunk(6, 1, "t1 "), 0.1)
    view.apply(chunk(7, 2, "t2 "), 0.2)
    assert view.stale_chunks == 1
    assert view.runs[RUN].text == "t0 t1 t2 "


def test_a_snapshot_does_not_reopen_a_run_that_ended_on_this_socket():
    view = ThreadView()
    view.apply(snapshot(0), 0.0)
    view.apply(chunk(1, 0, "t0 "), 0.1)
    view.apply(complete(2, "t0 "), 0.2)
    message = {"role": "assistant", "run_id": RUN, "text": "t0 ", "status": "completed"}
    view.apply(snapshot(2, messages=[message], state="resynced"), 0.3)
    assert view.runs[RUN].completed_at == 0.2
