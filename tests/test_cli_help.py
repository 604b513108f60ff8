"""The help a new user reads first lists what the README says each command takes."""

from __future__ import annotations

import pytest


def option_help(text: str, option: str) -> str:
    """The help of `option` in a command's --help, on one line."""
    after = text.split("Options:", 1)[1].split(f"  {option} ", 1)[1]
    lines = [after.splitlines()[0]]
    for line in after.splitlines()[1:]:
        if line.lstrip().startswith("-"):  # the next option
            break
        lines.append(line)
    return " ".join(" ".join(lines).split())


def test_the_command_list_says_serve_speaks_grpc_too(run_cli):
    """`onnxkit --help` said 'Serve models over HTTP', where `serve` serves HTTP and gRPC (--grpc-port)."""
    result = run_cli("--help")
    assert result.code == 0
    (serve,) = [line for line in result.out.splitlines() if line.strip().startswith("serve ")]
    assert "HTTP" in serve and "gRPC" in serve, serve


@pytest.mark.parametrize(("command", "option"), [("train", "--data"), ("eval", "--data"), ("predict", "-i, --input")])
def test_data_help_names_tsv_files_and_image_folders(run_cli, command, option):
    """train's and eval's --data said 'a .npz / .csv file', where they also read a .tsv and a folder of class
    folders of images (README: what you get; Image folders); predict's --input left out the .tsv."""
    result = run_cli(command, "--help")
    assert result.code == 0
    text = option_help(result.out, option)
    assert ".tsv" in text and "folder" in text, text


@pytest.mark.parametrize("option", ["--calib", "--eval"])
def test_quantize_data_help_names_image_folders(run_cli, option):
    result = run_cli("quantize", "--help")
    assert result.code == 0
    text = option_help(result.out, option)
    assert "folder" in text and ".tsv" in text, text
