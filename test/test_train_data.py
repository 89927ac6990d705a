"""Tests of the OCCO training data pipeline (training/data.py)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from occo_ros.io.image_pairs import read_gray
from training.data import (
    INPUT_NORMALIZATION,
    CropDataset,
    PairImages,
    choose_crop,
    load_pairs,
    read_mask,
    to_tensor,
)
from training.metrics import to_uint8

pytestmark = [pytest.mark.core]


def write_pair(root: Path, stem: str, size: tuple[int, int] = (40, 48), ext: str = '.png',
               ir_channels: int = 1, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Random RGB visible + IR images (H, W = size) under root/vi and root/ir."""
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
    ir = rng.integers(0, 256, size if ir_channels == 1 else (*size, 3), dtype=np.uint8)
    for folder in ('ir', 'vi'):
        (root / folder).mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(root / 'vi' / f'{stem}{ext}'), rgb[:, :, ::-1])
    assert cv2.imwrite(str(root / 'ir' / f'{stem}{ext}'), ir)
    return rgb, ir


def write_masks(mask_root: Path, stem: str, mask_vi: np.ndarray, mask_ir: np.ndarray) -> None:
    for folder, mask in (('mask_vi', mask_vi), ('mask_ir', mask_ir)):
        (mask_root / folder).mkdir(parents=True, exist_ok=True)
        assert cv2.imwrite(str(mask_root / folder / f'{stem}.png'), mask.astype(np.uint8))


def test_to_uint8_clamps_rounds_half_up_and_inverts_to_tensor():
    values = np.array([[-0.2, 0.0, 0.5 / 255, 1.49 / 255, 1.0, 1.7]], np.float32)
    assert to_uint8(values).tolist() == [[0, 0, 1, 1, 255, 255]]
    every_level = np.arange(256, dtype=np.uint8).reshape(16, 16)
    assert np.array_equal(to_uint8(to_tensor(every_level)[0].numpy()), every_level)


def test_normalisation_matches_inference(tmp_path):
    rgb = np.zeros((32, 32, 3), np.uint8)
    rgb[...] = (100, 150, 200)
    (tmp_path / 'vi').mkdir()
    (tmp_path / 'ir').mkdir()
    cv2.imwrite(str(tmp_path / 'vi' / 'a.png'), rgb[:, :, ::-1])
    cv2.imwrite(str(tmp_path / 'ir' / 'a.png'), np.full((32, 32), 51, np.uint8))
    pairs, _ = load_pairs([tmp_path], crop=16, log=lambda m: None)
    item = CropDataset(pairs, crop=16, flip=False)[0]
    # BT.601: 0.299*100 + 0.587*150 + 0.114*200 = 140.75 -> 141 (8-bit) -> /255.
    assert torch.allclose(item['visible'], torch.full((1, 16, 16), 141 / 255))
    assert torch.allclose(item['infrared'], torch.full((1, 16, 16), 51 / 255))
    assert item['visible'].dtype == torch.float32
    assert INPUT_NORMALIZATION['per_image_minmax'] is False


def test_formats_channels_and_several_roots(tmp_path):
    write_pair(tmp_path / 'a', 'png1', ext='.png')
    write_pair(tmp_path / 'a', 'jpg1', ext='.jpg')
    write_pair(tmp_path / 'b', 'bmp1', ext='.bmp', ir_channels=3)
    _, ir = write_pair(tmp_path / 'b', 'tif1', ext='.tif')
    pairs, report = load_pairs([tmp_path / 'a', tmp_path / 'b'], crop=32, log=lambda m: None)
    assert sorted(p.stem for p in pairs) == ['bmp1', 'jpg1', 'png1', 'tif1']
    assert report.loaded == 4 and report.skipped == 0
    tif = next(p for p in pairs if p.stem == 'tif1')
    assert np.array_equal(tif.infrared, ir)
    bmp = next(p for p in pairs if p.stem == 'bmp1')
    assert bmp.infrared.ndim == 2            # 3-channel IR -> luma


def test_bad_inputs_are_skipped_and_named(tmp_path):
    write_pair(tmp_path, 'good')
    write_pair(tmp_path, 'mismatch')
    cv2.imwrite(str(tmp_path / 'ir' / 'mismatch.png'), np.zeros((20, 20), np.uint8))
    write_pair(tmp_path, 'broken')
    (tmp_path / 'vi' / 'broken.png').write_bytes(b'not an image')
    cv2.imwrite(str(tmp_path / 'ir' / 'lonely.png'), np.zeros((40, 48), np.uint8))
    messages = []
    pairs, report = load_pairs([tmp_path], crop=32, log=messages.append)
    assert [p.stem for p in pairs] == ['good']
    assert report.skipped == 2
    text = '\n'.join(messages)
    assert 'mismatch.png' in text and 'size mismatch' in text
    assert 'broken.png' in text and 'unreadable' in text
    assert 'lonely.png' in text and 'unpaired' in text
    assert '1 pairs loaded' in messages[-1]


def test_no_usable_pairs_raises(tmp_path):
    (tmp_path / 'ir').mkdir()
    (tmp_path / 'vi').mkdir()
    with pytest.raises(ValueError, match='no usable training pairs'):
        load_pairs([tmp_path], log=lambda m: None)
    with pytest.raises(NotADirectoryError):
        load_pairs([tmp_path / 'missing'], log=lambda m: None)


def test_small_images_pad_or_skip(tmp_path):
    write_pair(tmp_path, 'small', size=(20, 48))
    write_pair(tmp_path, 'large', size=(40, 48))
    pairs, report = load_pairs([tmp_path], crop=32, small_images='pad', log=lambda m: None)
    small = next(p for p in pairs if p.stem == 'small')
    assert small.visible.shape == (32, 48) and report.padded == ['small']
    # Reflect padding: row 20 mirrors row 18.
    assert np.array_equal(small.visible[20], small.visible[18])
    messages = []
    pairs, report = load_pairs([tmp_path], crop=32, small_images='skip', log=messages.append)
    assert [p.stem for p in pairs] == ['large']
    assert any('small.png' in m and 'smaller than' in m for m in messages)


def test_masks_are_thresholded_and_empty_pairs_skipped(tmp_path):
    data, masks = tmp_path / 'data', tmp_path / 'masks'
    write_pair(data, 'obj')
    write_pair(data, 'empty')
    write_pair(data, 'nomask')
    mask = np.zeros((40, 48), np.uint8)
    mask[5:9, 5:9] = 200
    mask[20, 20] = 100                        # below the 127 threshold
    write_masks(masks, 'obj', mask, np.zeros_like(mask))
    write_masks(masks, 'empty', np.zeros_like(mask), np.zeros_like(mask))
    messages = []
    pairs, report = load_pairs([data], [masks], crop=32, log=messages.append)
    assert [p.stem for p in pairs] == ['obj']
    assert pairs[0].mask_vi.dtype == bool and pairs[0].mask_vi.sum() == 16
    assert not pairs[0].mask_ir.any()
    assert set(report.problems) == {'empty masks', 'missing mask'}
    assert any('nomask' in m for m in messages)
    assert read_mask(masks / 'mask_vi' / 'obj.png')[20, 20] == np.False_


def test_dense_targets_load_checked_and_crop_with_the_pair(tmp_path):
    data, targets = tmp_path / 'data', tmp_path / 'targets'
    targets.mkdir()
    for stem in ('a', 'b', 'c', 'small'):
        write_pair(data, stem, size=(24, 40) if stem == 'small' else (40, 48))
    # Target = the visible luma itself, so a correctly aligned target crop equals the
    # visible crop (also when flipped).
    cv2.imwrite(str(targets / 'a.png'), read_gray(data / 'vi' / 'a.png'))
    cv2.imwrite(str(targets / 'small.png'), read_gray(data / 'vi' / 'small.png'))
    cv2.imwrite(str(targets / 'c.png'), np.zeros((8, 8), np.uint8))
    messages = []
    pairs, report = load_pairs([data], crop=32, log=messages.append, target_roots=[targets])
    assert [p.stem for p in pairs] == ['a', 'small']
    assert set(report.problems) == {'missing target', 'size mismatch'}
    assert any('b.png missing' in m for m in messages)
    assert pairs[1].target.shape == (32, 40)              # padded like the pair
    dataset = CropDataset(pairs, crop=32, crops_per_pair=8, flip=True)
    for item in (dataset[i] for i in range(len(dataset))):
        assert torch.equal(item['target'], item['visible'])
    with pytest.raises(ValueError, match='target roots'):
        load_pairs([data, data], target_roots=[targets], log=lambda m: None)


def test_choose_crop_contains_object_pixels():
    objects = np.zeros((200, 300), bool)
    objects[190:195, 290:296] = True          # 30 pixels in a corner
    for seed in range(20):
        rng = np.random.default_rng(seed)
        y, x = choose_crop(objects, 64, rng, tries=20, min_pixels=64)
        assert 0 <= y <= 200 - 64 and 0 <= x <= 300 - 64
        assert objects[y:y + 64, x:x + 64].any()


def test_choose_crop_uniform_tries_find_large_objects():
    objects = np.zeros((100, 100), bool)
    objects[:, :50] = True
    rng = np.random.default_rng(0)
    for _ in range(20):
        y, x = choose_crop(objects, 32, rng, tries=20, min_pixels=64)
        assert objects[y:y + 32, x:x + 32].sum() >= 64


def make_pairs(count: int, size: int = 48) -> list[PairImages]:
    rng = np.random.default_rng(1)
    pairs = []
    for index in range(count):
        mask = np.zeros((size, size), bool)
        mask[size // 4:size // 4 + 8, size // 2:size // 2 + 10] = True
        pairs.append(PairImages(f's{index}', rng.integers(0, 256, (size, size), np.uint8),
                                rng.integers(0, 256, (size, size), np.uint8), mask,
                                np.zeros_like(mask)))
    return pairs


def test_dataset_items_reproducible_per_epoch_and_index():
    dataset = CropDataset(make_pairs(3), crop=24, crops_per_pair=2, min_mask_pixels=10, seed=5)
    assert len(dataset) == 6
    first = dataset[4]
    assert set(first) == {'visible', 'infrared', 'mask_vi', 'mask_ir'}
    assert first['visible'].shape == (1, 24, 24)
    assert first['mask_vi'].sum() >= 10       # crops contain object pixels
    assert torch.equal(dataset[4]['visible'], first['visible'])
    epochs = []
    for epoch in range(4):
        dataset.set_epoch(epoch)
        epochs.append(dataset[4]['visible'])
    assert any(not torch.equal(epochs[0], other) for other in epochs[1:])


def test_dataset_flips_all_images_together():
    pair = make_pairs(1, size=24)[0]
    dataset = CropDataset([pair], crop=24, crops_per_pair=1, min_mask_pixels=1, flip=True)
    seen_flipped = False
    for epoch in range(8):
        dataset.set_epoch(epoch)
        item = dataset[0]
        flipped = not torch.equal(item['visible'][0], torch.from_numpy(pair.visible / 255.0)
                                  .float())
        if flipped:
            seen_flipped = True
            assert torch.equal(item['mask_vi'][0], torch.from_numpy(
                pair.mask_vi[:, ::-1].astype(np.float32)))
    assert seen_flipped


def test_dataset_without_masks_has_uniform_crops():
    pairs = [PairImages(p.stem, p.visible, p.infrared) for p in make_pairs(2)]
    item = CropDataset(pairs, crop=16)[1]
    assert set(item) == {'visible', 'infrared'}
    with pytest.raises(ValueError, match='smaller than'):
        CropDataset(pairs, crop=64)


def test_real_pairs_load(shared_data):
    root = shared_data / 'eval' / 'roadscene'
    pairs, report = load_pairs([root], crop=256, log=lambda m: None)
    assert report.loaded == len(pairs) > 0
    stem = pairs[0].stem
    vi_path = next((root / 'vi').glob(f'{stem}.*'))
    assert np.array_equal(pairs[0].visible[:100, :100], read_gray(vi_path)[:100, :100])
    assert min(min(p.visible.shape) for p in pairs) >= 256
