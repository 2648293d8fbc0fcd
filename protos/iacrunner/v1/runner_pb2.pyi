from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class OnDisconnect(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CANCEL: _ClassVar[OnDisconnect]
    CONTINUE: _ClassVar[OnDisconnect]

class Outcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OUTCOME_UNSPECIFIED: _ClassVar[Outcome]
    OUTCOME_SUCCEEDED: _ClassVar[Outcome]
    OUTCOME_FAILED: _ClassVar[Outcome]
    OUTCOME_CANCELED: _ClassVar[Outcome]
    OUTCOME_TIMED_OUT: _ClassVar[Outcome]
    OUTCOME_KILLED: _ClassVar[Outcome]
    OUTCOME_REFUSED: _ClassVar[Outcome]
    OUTCOME_ERROR: _ClassVar[Outcome]

class CancelStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CANCEL_STATUS_UNSPECIFIED: _ClassVar[CancelStatus]
    CANCEL_STATUS_CANCELING: _ClassVar[CancelStatus]
    CANCEL_STATUS_ALREADY_FINISHED: _ClassVar[CancelStatus]
CANCEL: OnDisconnect
CONTINUE: OnDisconnect
OUTCOME_UNSPECIFIED: Outcome
OUTCOME_SUCCEEDED: Outcome
OUTCOME_FAILED: Outcome
OUTCOME_CANCELED: Outcome
OUTCOME_TIMED_OUT: Outcome
OUTCOME_KILLED: Outcome
OUTCOME_REFUSED: Outcome
OUTCOME_ERROR: Outcome
CANCEL_STATUS_UNSPECIFIED: CancelStatus
CANCEL_STATUS_CANCELING: CancelStatus
CANCEL_STATUS_ALREADY_FINISHED: CancelStatus

class ExecuteRequest(_message.Message):
    __slots__ = ("run_id", "tool", "work_dir", "command", "args", "env_vars", "timeout", "sensitive_env", "workspace", "collect", "cleanup", "on_disconnect", "tool_version", "packed_output", "mask_values", "state_channel", "stdout_file", "verify_sha256")
    class EnvVarsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class VerifySha256Entry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    TOOL_FIELD_NUMBER: _ClassVar[int]
    WORK_DIR_FIELD_NUMBER: _ClassVar[int]
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    ARGS_FIELD_NUMBER: _ClassVar[int]
    ENV_VARS_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    SENSITIVE_ENV_FIELD_NUMBER: _ClassVar[int]
    WORKSPACE_FIELD_NUMBER: _ClassVar[int]
    COLLECT_FIELD_NUMBER: _ClassVar[int]
    CLEANUP_FIELD_NUMBER: _ClassVar[int]
    ON_DISCONNECT_FIELD_NUMBER: _ClassVar[int]
    TOOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    PACKED_OUTPUT_FIELD_NUMBER: _ClassVar[int]
    MASK_VALUES_FIELD_NUMBER: _ClassVar[int]
    STATE_CHANNEL_FIELD_NUMBER: _ClassVar[int]
    STDOUT_FILE_FIELD_NUMBER: _ClassVar[int]
    VERIFY_SHA256_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    tool: str
    work_dir: str
    command: str
    args: _containers.RepeatedScalarFieldContainer[str]
    env_vars: _containers.ScalarMap[str, str]
    timeout: float
    sensitive_env: _containers.RepeatedScalarFieldContainer[str]
    workspace: bytes
    collect: _containers.RepeatedScalarFieldContainer[str]
    cleanup: bool
    on_disconnect: OnDisconnect
    tool_version: str
    packed_output: bool
    mask_values: _containers.RepeatedScalarFieldContainer[str]
    state_channel: str
    stdout_file: str
    verify_sha256: _containers.ScalarMap[str, str]
    def __init__(self, run_id: _Optional[str] = ..., tool: _Optional[str] = ..., work_dir: _Optional[str] = ..., command: _Optional[str] = ..., args: _Optional[_Iterable[str]] = ..., env_vars: _Optional[_Mapping[str, str]] = ..., timeout: _Optional[float] = ..., sensitive_env: _Optional[_Iterable[str]] = ..., workspace: _Optional[bytes] = ..., collect: _Optional[_Iterable[str]] = ..., cleanup: _Optional[bool] = ..., on_disconnect: _Optional[_Union[OnDisconnect, str]] = ..., tool_version: _Optional[str] = ..., packed_output: _Optional[bool] = ..., mask_values: _Optional[_Iterable[str]] = ..., state_channel: _Optional[str] = ..., stdout_file: _Optional[str] = ..., verify_sha256: _Optional[_Mapping[str, str]] = ...) -> None: ...

class ExecuteEvent(_message.Message):
    __slots__ = ("started", "output", "result")
    STARTED_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    started: Started
    output: Output
    result: Result
    def __init__(self, started: _Optional[_Union[Started, _Mapping]] = ..., output: _Optional[_Union[Output, _Mapping]] = ..., result: _Optional[_Union[Result, _Mapping]] = ...) -> None: ...

class Started(_message.Message):
    __slots__ = ("run_id", "runner_id", "started_at", "tool_version")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    RUNNER_ID_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    TOOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    runner_id: str
    started_at: str
    tool_version: str
    def __init__(self, run_id: _Optional[str] = ..., runner_id: _Optional[str] = ..., started_at: _Optional[str] = ..., tool_version: _Optional[str] = ...) -> None: ...

class Output(_message.Message):
    __slots__ = ("lines", "blocks")
    LINES_FIELD_NUMBER: _ClassVar[int]
    BLOCKS_FIELD_NUMBER: _ClassVar[int]
    lines: _containers.RepeatedCompositeFieldContainer[Line]
    blocks: _containers.RepeatedCompositeFieldContainer[Block]
    def __init__(self, lines: _Optional[_Iterable[_Union[Line, _Mapping]]] = ..., blocks: _Optional[_Iterable[_Union[Block, _Mapping]]] = ...) -> None: ...

class Line(_message.Message):
    __slots__ = ("seq", "stream", "text")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    STREAM_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    seq: int
    stream: str
    text: str
    def __init__(self, seq: _Optional[int] = ..., stream: _Optional[str] = ..., text: _Optional[str] = ...) -> None: ...

class Block(_message.Message):
    __slots__ = ("first_seq", "stream", "text")
    FIRST_SEQ_FIELD_NUMBER: _ClassVar[int]
    STREAM_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    first_seq: int
    stream: str
    text: str
    def __init__(self, first_seq: _Optional[int] = ..., stream: _Optional[str] = ..., text: _Optional[str] = ...) -> None: ...

class Artifact(_message.Message):
    __slots__ = ("path", "content")
    PATH_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    path: str
    content: bytes
    def __init__(self, path: _Optional[str] = ..., content: _Optional[bytes] = ...) -> None: ...

class Result(_message.Message):
    __slots__ = ("success", "exit_code", "error_msg", "started_at", "ended_at", "artifacts", "output_truncated", "last_seq", "tool_version", "outcome")
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    ERROR_MSG_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    ENDED_AT_FIELD_NUMBER: _ClassVar[int]
    ARTIFACTS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQ_FIELD_NUMBER: _ClassVar[int]
    TOOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    success: bool
    exit_code: int
    error_msg: str
    started_at: str
    ended_at: str
    artifacts: _containers.RepeatedCompositeFieldContainer[Artifact]
    output_truncated: bool
    last_seq: int
    tool_version: str
    outcome: Outcome
    def __init__(self, success: _Optional[bool] = ..., exit_code: _Optional[int] = ..., error_msg: _Optional[str] = ..., started_at: _Optional[str] = ..., ended_at: _Optional[str] = ..., artifacts: _Optional[_Iterable[_Union[Artifact, _Mapping]]] = ..., output_truncated: _Optional[bool] = ..., last_seq: _Optional[int] = ..., tool_version: _Optional[str] = ..., outcome: _Optional[_Union[Outcome, str]] = ...) -> None: ...

class AttachRequest(_message.Message):
    __slots__ = ("run_id", "from_seq", "packed_output", "state_channel")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    FROM_SEQ_FIELD_NUMBER: _ClassVar[int]
    PACKED_OUTPUT_FIELD_NUMBER: _ClassVar[int]
    STATE_CHANNEL_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    from_seq: int
    packed_output: bool
    state_channel: str
    def __init__(self, run_id: _Optional[str] = ..., from_seq: _Optional[int] = ..., packed_output: _Optional[bool] = ..., state_channel: _Optional[str] = ...) -> None: ...

class CancelRequest(_message.Message):
    __slots__ = ("run_id", "force")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    force: bool
    def __init__(self, run_id: _Optional[str] = ..., force: _Optional[bool] = ...) -> None: ...

class CancelResponse(_message.Message):
    __slots__ = ("run_id", "status")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    status: CancelStatus
    def __init__(self, run_id: _Optional[str] = ..., status: _Optional[_Union[CancelStatus, str]] = ...) -> None: ...

class GetInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Tool(_message.Message):
    __slots__ = ("name", "version", "path", "is_default")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    IS_DEFAULT_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    path: str
    is_default: bool
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., path: _Optional[str] = ..., is_default: _Optional[bool] = ...) -> None: ...

class RunnerInfo(_message.Message):
    __slots__ = ("runner_id", "labels", "tools", "max_concurrent", "active", "draining", "version", "accept", "active_runs", "features")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    RUNNER_ID_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    TOOLS_FIELD_NUMBER: _ClassVar[int]
    MAX_CONCURRENT_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_FIELD_NUMBER: _ClassVar[int]
    DRAINING_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ACCEPT_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_RUNS_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    runner_id: str
    labels: _containers.ScalarMap[str, str]
    tools: _containers.RepeatedCompositeFieldContainer[Tool]
    max_concurrent: int
    active: int
    draining: bool
    version: str
    accept: _containers.RepeatedScalarFieldContainer[str]
    active_runs: _containers.RepeatedScalarFieldContainer[str]
    features: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, runner_id: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., tools: _Optional[_Iterable[_Union[Tool, _Mapping]]] = ..., max_concurrent: _Optional[int] = ..., active: _Optional[int] = ..., draining: _Optional[bool] = ..., version: _Optional[str] = ..., accept: _Optional[_Iterable[str]] = ..., active_runs: _Optional[_Iterable[str]] = ..., features: _Optional[_Iterable[str]] = ...) -> None: ...

class StateReply(_message.Message):
    __slots__ = ("hello", "response")
    HELLO_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    hello: StateHello
    response: StateResponse
    def __init__(self, hello: _Optional[_Union[StateHello, _Mapping]] = ..., response: _Optional[_Union[StateResponse, _Mapping]] = ...) -> None: ...

class StateHello(_message.Message):
    __slots__ = ("channel",)
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    channel: str
    def __init__(self, channel: _Optional[str] = ...) -> None: ...

class StateResponse(_message.Message):
    __slots__ = ("call_id", "status", "body", "content_type")
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    call_id: int
    status: int
    body: bytes
    content_type: str
    def __init__(self, call_id: _Optional[int] = ..., status: _Optional[int] = ..., body: _Optional[bytes] = ..., content_type: _Optional[str] = ...) -> None: ...

class StateCall(_message.Message):
    __slots__ = ("call_id", "run_id", "method", "lock_id", "body", "content_md5")
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    LOCK_ID_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    CONTENT_MD5_FIELD_NUMBER: _ClassVar[int]
    call_id: int
    run_id: str
    method: str
    lock_id: str
    body: bytes
    content_md5: str
    def __init__(self, call_id: _Optional[int] = ..., run_id: _Optional[str] = ..., method: _Optional[str] = ..., lock_id: _Optional[str] = ..., body: _Optional[bytes] = ..., content_md5: _Optional[str] = ...) -> None: ...
