"""occo_ros.output_safety: the one output rule of every tool, tried against real folders,
symbolic and hard links. The tools' own tests (test_fuse_folder, test_bag, test_train,
test_export) run the same rule through their command lines."""

import json
import os

import pytest

from occo_ros.output_safety import (
    MANIFEST,
    OutputError,
    OutputExistsError,
    check_apart,
    check_file_output,
    claim,
    owned_entries,
    prepare_output_folder,
)


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
    for folder in (run, tmp_path / 'broken'):
        with pytest.raises(OutputError, match='no record of what wrote it'):
            prepare_output_folder(folder, 'occo-train', ['last.pt'], overwrite=True)
    prepare_output_folder(run, 'occo-train', ['last.pt', 'tb'], overwrite=False, resume=True)
    assert (run / 'last.pt').read_bytes() == b'old run'
    (tmp_path / 'file').write_text('x')
    with pytest.raises(OutputError, match='not a folder'):
        prepare_output_folder(tmp_path / 'file', 'occo-fuse', [], overwrite=True)
