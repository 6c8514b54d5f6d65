from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from fixtures_live import run_live
from live.errors import LiveError
from live.inference import PROVIDERS, open_session


def relu_model(tmp_path: Path) -> Path:
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    path = tmp_path / "relu.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9), path)
    return path


def cuda_works(tmp_path: Path) -> bool:
    return open_session(relu_model(tmp_path), ("cuda",)).provider == "cuda"


def test_provider_reported_is_the_one_in_use_and_spam_is_summarised(tmp_path, capfd):
    session = open_session(relu_model(tmp_path))
    assert PROVIDERS[session.provider] == session._model.get_providers()[0]
    out = session.run(None, {"x": np.array([-1, 2], np.float32)})[0]
    assert out.tolist() == [0.0, 2.0]
    captured = capfd.readouterr()
    assert "EP Error" not in captured.out + captured.err  # ORT's own noise never reaches the user
    if session.provider == "cpu":
        assert "unavailable" in session.fallback and "using CPU" in session.fallback
        assert "\n" not in session.describe()


def test_broken_model_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(LiveError, match="broken.onnx"):
        open_session(bad, ("cpu",))


def test_gpu_session_runs_on_cuda(tmp_path):
    if "CUDAExecutionProvider" not in ort.get_available_providers() or not cuda_works(tmp_path):
        pytest.skip("no working CUDA provider on this machine")
    session = open_session(relu_model(tmp_path), ("cuda", "cpu"))
    assert session.provider == "cuda" and not session.fallback


def test_doctor_reports_each_part_with_fixes(jack_server):
    result = run_live(["doctor"])
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "cpu: a session runs" in out
    assert "Cameras:" in out and "Audio:" in out and "MIDI" in out and "Display:" in out
    assert "JACK" in out  # the running JACK server's audio device is listed...
    assert "MIDI (UNIX_JACK): inputs" in out  # ...and its MIDI API
    if "Cameras: none found" in out:
        assert "--source" in out  # and the fix is given
