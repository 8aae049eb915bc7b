"""Where a run's torch work runs: never on a process's main thread, whose OpenMP thread team would slow every task
thread (`tasks.runners.torch_work`), and always with the tasks' thread count, so results do not depend on it."""

import contextvars
import threading

import pytest
import torch

from tasks.runners import TORCH_THREADS, set_torch_threads, torch_work
from unseen.config import OrchestrationParams

MARK = contextvars.ContextVar("mark", default="unset")


@pytest.fixture
def threads_restored():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def _where() -> tuple[bool, int, str]:
    return threading.current_thread() is threading.main_thread(), torch.get_num_threads(), MARK.get()


def test_main_thread_keeps_one_torch_thread_and_its_work_runs_off_it_with_the_tasks_count(threads_restored):
    assert threading.current_thread() is threading.main_thread()
    MARK.set("caller's context")
    assert set_torch_threads(OrchestrationParams()) == 1
    assert torch_work(OrchestrationParams(), _where) == (False, TORCH_THREADS, "caller's context")
    assert torch_work(OrchestrationParams(torch_threads=1), _where) == (False, 1, "caller's context")
    assert torch.get_num_threads() == 1


def test_torch_work_on_another_thread_runs_in_place_and_errors_reach_the_caller(threads_restored):
    seen: list = []
    thread = threading.Thread(target=lambda: seen.append((threading.get_ident(), torch_work(OrchestrationParams(), threading.get_ident))))
    thread.start()
    thread.join()
    caller, worker = seen[0]
    assert caller == worker

    def fail():
        raise ValueError("bad input, named")

    with pytest.raises(ValueError, match="bad input, named"):
        torch_work(OrchestrationParams(), fail)
