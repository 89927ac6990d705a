"""occo_ros.util.output_safety: the one output rule of every tool, tried against real folders,
symbolic and hard links. The tools' own tests (test_fuse_folder, test_bag, test_train,
test_export) run the same rule through their command lines."""

import json
import os

import pytest

from occo_ros.util.output_safety import (
    MANIFEST,
    OutputError,
    OutputExistsError,
    check_apart,
    check_file_output,
    claim,
    owned_entries,
    prepare_output_folder,
)

pytestmark = [pytest.mark.core]


def test_overlap_is_refused_in_every_direction_through_links(tmp_path):
    data = tmp_path / 'data'
    (data / 'ir').mkdir(parents=True)
    (data / 'model.pt').write_bytes(b'x')
    (tmp_path / 'link').symlink_to(data)
    os.link(data / 'model.pt', tmp_path / 'hard.pt')
    inputs = [data / 'ir', None, '', data / 'model.pt']
    for output in (data, data / 'ir', data / 'ir' / 'new', tmp_path, tmp_path / 'link' / 'ir',
                   tmp_path / 'link' / 'model.pt', tmp_path / 'hard.pt'):
        with pytest.raises(OutputError, match='overlaps the input'):
            check_apart(output, inputs)
    check_apart(tmp_path / 'out', inputs)                 # apart: fine
    check_apart(data / 'model.onnx', inputs)


def test_one_file_outputs_need_overwrite_and_must_be_files(tmp_path):
    model, out = tmp_path / 'model.pt', tmp_path / 'model.onnx'
    model.write_bytes(b'weights')
    check_file_output(out, overwrite=False, inputs=[model])
    out.write_bytes(b'old')
    with pytest.raises(OutputExistsError, match='--overwrite'):
        check_file_output(out, overwrite=False, inputs=[model])
    check_file_output(out, overwrite=True, inputs=[model])
    with pytest.raises(OutputError, match='overlaps'):
        check_file_output(model, overwrite=True, inputs=[model])
    with pytest.raises(OutputError, match='is a folder'):
        check_file_output(tmp_path, overwrite=True)


def test_overwrite_removes_exactly_what_the_tool_recorded(tmp_path):
    out = tmp_path / 'out'
    prepare_output_folder(out, 'occo-fuse', ['a.png', 'b.png'], overwrite=False)
    (out / 'a.png').write_bytes(b'a')                     # b.png: an interrupted run
    (out / 'sub').mkdir()
    claim(out, 'occo-fuse', ['sub'])
    (out / 'sub' / 'x').write_bytes(b'x')
    assert json.loads((out / MANIFEST).read_text()) == {
        'tool': 'occo-fuse', 'written': ['a.png', 'b.png', 'sub']}
    with pytest.raises(OutputExistsError):
        prepare_output_folder(out, 'occo-fuse', ['c.png'], overwrite=False)
    with pytest.raises(OutputError, match='written by occo-fuse'):
        prepare_output_folder(out, 'occo-train', ['last.pt'], overwrite=True)
    prepare_output_folder(out, 'occo-fuse', ['c.png'], overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST]
    assert owned_entries(out, 'occo-fuse') == [MANIFEST]
    prepare_output_folder(out, 'occo-fuse', ['c.png'], overwrite=False)  # nothing written yet
    for overwrite in (False, True):   # a manifest alone: nothing to lose, whoever wrote it
        prepare_output_folder(out, 'occo-eval', ['grid.png'], overwrite=overwrite)
    prepare_output_folder(out, 'occo-fuse', ['c.png'], overwrite=True)
    (out / 'c.png').write_bytes(b'c')
    (out / 'user.txt').write_text('keep')
    with pytest.raises(OutputError, match='1 entries occo-fuse did not write .user.txt.'):
        prepare_output_folder(out, 'occo-fuse', ['c.png'], overwrite=True)
    assert (out / 'user.txt').read_text() == 'keep' and (out / 'c.png').exists()


def test_folders_without_a_manifest_are_never_replaced_but_resume_continues(tmp_path):
    run = tmp_path / 'run'
    run.mkdir()
    (run / 'last.pt').write_bytes(b'old run')
    (tmp_path / 'broken').mkdir()
    (tmp_path / 'broken' / MANIFEST).write_text('{not json')
    (tmp_path / 'broken' / 'a.png').write_bytes(b'png')
    for folder in (run, tmp_path / 'broken'):
        with pytest.raises(OutputError, match='no record of what wrote it'):
            prepare_output_folder(folder, 'occo-train', ['last.pt'], overwrite=True)
    prepare_output_folder(run, 'occo-train', ['last.pt', 'tb'], overwrite=False, resume=True)
    assert (run / 'last.pt').read_bytes() == b'old run'
    (tmp_path / 'file').write_text('x')
    with pytest.raises(OutputError, match='not a folder'):
        prepare_output_folder(tmp_path / 'file', 'occo-fuse', [], overwrite=True)


# -- the command lines: try to destroy data through each tool and fail ------------------------
def snapshot(folder):
    """Every file under ``folder`` with its bytes."""
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob('*'))
            if p.is_file()}


def test_occo_export_never_replaces_the_checkpoint_a_folder_or_an_unasked_file(
        tmp_path, capsys):
    from occo_ros.cli.export import main

    model = tmp_path / 'model.pt'
    model.write_bytes(b'weights')              # refused before the checkpoint is ever read
    (tmp_path / 'old.onnx').write_bytes(b'old export')
    before = snapshot(tmp_path)
    for out, extra, why in ((model, ('--overwrite',), 'overlaps the input'),
                            (tmp_path / 'old.onnx', (), 'pass --overwrite'),
                            (tmp_path, ('--overwrite',), 'overlaps the input')):
        assert main(['--model', str(model), '--out', str(out), '--dynamic', *extra]) == 2
        assert why in capsys.readouterr().err
    (tmp_path / 'dir.onnx').mkdir()
    assert main(['--model', str(model), '--out', str(tmp_path / 'dir.onnx'), '--dynamic',
                 '--overwrite']) == 2
    assert 'is a folder' in capsys.readouterr().err
    assert snapshot(tmp_path) == before


@pytest.fixture
def tiny_training_data(tmp_path):
    import cv2
    import numpy as np

    rng = np.random.default_rng(0)
    for folder in ('ir', 'vi'):
        (tmp_path / 'data' / folder).mkdir(parents=True)
        for index in range(4):
            image = cv2.GaussianBlur(rng.integers(0, 256, (40, 40), dtype=np.uint8), (5, 5), 2)
            cv2.imwrite(str(tmp_path / 'data' / folder / f'p{index}.png'), image)
    return tmp_path / 'data'


@pytest.mark.slow
def test_occo_train_needs_resume_or_overwrite_and_replaces_only_its_own_run(
        tiny_training_data, tmp_path, capsys):
    from training import train

    data, run, export = tiny_training_data, tmp_path / 'run', tmp_path / 'model.pt'

    def occo_train(out_dir, *extra):
        return train.main(['--train-roots', str(data), '--loss', 'pixel', '--crop', '32',
                           '--batch-size', '2', '--max-steps', '1', '--device', 'cpu',
                           '--workers', '0', '--out-dir', str(out_dir), '--export-path',
                           str(export), *extra])

    inputs = snapshot(data)
    assert occo_train(run) == 0
    assert sorted(p.name for p in run.iterdir()) == [MANIFEST, 'last.pt', 'tb']
    first, exported = snapshot(run), export.read_bytes()
    assert occo_train(run) == 2                           # a re-run into the same folder
    assert '--resume or --overwrite' in capsys.readouterr().err
    assert snapshot(run) == first and export.read_bytes() == exported
    assert occo_train(tmp_path / 'new') == 2              # the export exists
    assert 'model.pt exists; pass --overwrite' in capsys.readouterr().err
    assert occo_train(run, '--overwrite') == 0
    assert snapshot(run) != first                         # replaced: a new run
    (run / 'notes.txt').write_text('mine')
    assert occo_train(run, '--overwrite') == 2
    assert 'notes.txt' in capsys.readouterr().err and (run / 'notes.txt').read_text() == 'mine'
    for out_dir in (data, data / 'ir', tmp_path):         # overlapping the training data
        assert occo_train(out_dir, '--overwrite') == 2
        assert 'overlaps the input' in capsys.readouterr().err
    assert snapshot(data) == inputs


@pytest.mark.parametrize('tool', ['occo_ros.cli.fuse', 'occo_ros.cli.bag', 'occo_ros.cli.export',
                                  'training.train', 'training.evaluate'])
def test_every_tool_documents_overwrite_and_its_exit_status_in_help(tool, capsys):
    import importlib

    with pytest.raises(SystemExit) as exit_info:
        importlib.import_module(tool).main(['--help'])
    assert exit_info.value.code == 0
    text = ' '.join(capsys.readouterr().out.split())
    assert '--overwrite' in text
    assert 'Exit status: 0 ' in text and ' 2 bad ' in text
