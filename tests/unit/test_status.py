"""Where a replica is in its life, as each backend tells it: a phase and its reason."""

from workers.scaling.backends import GONE, RUNNING, Phase, Status, container_status, exit_reason


def test_a_containers_state_is_a_replicas_phase_with_its_reason() -> None:
    assert container_status({"Status": "running"}) == RUNNING
    assert container_status({"Status": "paused"}) == RUNNING  # frozen, not gone
    assert container_status({"Status": "created"}) == Status(Phase.EXITED, "created, never started")
    assert container_status({"Status": "exited", "ExitCode": 137, "OOMKilled": True}) == \
        Status(Phase.EXITED, "exit code 137, out of memory")
    assert container_status({"Status": "dead", "Error": "driver failed"}) == Status(Phase.EXITED, "driver failed")
    assert container_status({}) == Status(Phase.EXITED, "not running")


def test_pending_and_running_are_live_exited_and_gone_are_not() -> None:
    assert [Status(phase).live for phase in Phase] == [True, True, False, False]
    assert not GONE.live and RUNNING.live


def test_an_exit_code_is_told_as_a_person_would() -> None:
    assert (exit_reason(3), exit_reason(-9), exit_reason(-200)) == ("exit code 3", "killed by SIGKILL",
                                                                      "exit code -200")
