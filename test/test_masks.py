"""Tests of occo-masks (training/masks.py): discernment, the weight-free fallback, the CLI,
and the Grounding DINO + SAM path on tiny randomly initialised local models."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import cv2
import numpy as np
import pytest

from occo_ros.io.image_pairs import read_gray
from training import masks

pytestmark = [pytest.mark.core]


def scene(size: tuple[int, int] = (96, 128)) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A 'night' pair: a hot person (IR only) and a lit sign (visible and IR).

    Returns (visible luma float32, infrared float32, visible RGB uint8).
    """
    rng = np.random.default_rng(0)
    visible = 0.05 + 0.01 * rng.standard_normal(size).astype(np.float32)
    infrared = 0.3 + 0.01 * rng.standard_normal(size).astype(np.float32)
    infrared[40:80, 20:32] = 0.9               # person: hot, dark in visible
    visible[30:45, 80:110] = 0.8               # sign: lit and slightly warm
    infrared[30:45, 80:110] = 0.5
    visible, infrared = visible.clip(0, 1), infrared.clip(0, 1)
    rgb = np.repeat((visible * 255).astype(np.uint8)[:, :, None], 3, axis=2)
    return visible, infrared, rgb


def box(shape: tuple[int, int], top: int, bottom: int, left: int, right: int) -> np.ndarray:
    region = np.zeros(shape, bool)
    region[top:bottom, left:right] = True
    return region


def test_local_contrast():
    image = np.full((50, 50), 0.2, np.float32)
    image[20:30, 20:30] = 0.8
    region = box(image.shape, 20, 30, 20, 30)
    ring = box(image.shape, 15, 35, 15, 35) & ~region
    # |0.8 - 0.2| / sqrt(0 + noise^2) = 0.6 / 0.02.
    assert masks.local_contrast(image, region, ring) == pytest.approx(30.0, rel=1e-4)
    assert masks.local_contrast(np.full((50, 50), 0.5), region, ring) == 0.0
    assert masks.local_contrast(image, region, np.zeros_like(region)) == 0.0


def test_discern_splits_objects_by_modality():
    visible, infrared, _ = scene()
    person = box(visible.shape, 40, 80, 20, 32)
    sign = box(visible.shape, 30, 45, 80, 110)
    mask_vi, mask_ir = masks.discern([person, sign], visible, infrared)
    assert np.array_equal(mask_ir, person | sign)         # both warmer than their ring
    assert np.array_equal(mask_vi, sign)                  # the person is dark in visible
    strict = masks.DiscernmentRule(threshold=1000.0)
    assert not any(m.any() for m in masks.discern([person, sign], visible, infrared, strict))
    empty_vi, empty_ir = masks.discern([], visible, infrared)
    assert not empty_vi.any() and not empty_ir.any()


def test_components_size_and_border_filters():
    mask = np.zeros((100, 100), bool)
    mask[0:10, 40:60] = True          # touches the top border
    mask[50:60, 50:60] = True         # 100 px
    mask[80:82, 10:12] = True         # 4 px
    kept = masks.components(mask, min_area=20, max_fraction=0.5, drop_top_border=True)
    assert len(kept) == 1 and kept[0].sum() == 100
    assert len(masks.components(mask, min_area=20, max_fraction=0.5)) == 2
    assert len(masks.components(mask, 1, 0.001)) == 1       # only the 4 px blob is small


def test_fallback_finds_the_hot_person():
    visible, infrared, rgb = scene()
    objects = masks.FallbackProposer()(visible, infrared, rgb)
    person = box(visible.shape, 40, 80, 20, 32)
    overlaps = [(obj & person).sum() / (obj | person).sum() for obj in objects]
    assert max(overlaps) > 0.7
    mask_vi, mask_ir = masks.discern(objects, visible, infrared)
    assert (mask_ir & person).sum() > 0.7 * person.sum()
    assert not (mask_vi & person).any()


def write_scene(root: Path, stems: list[str]) -> None:
    visible, infrared, rgb = scene()
    (root / 'ir').mkdir(parents=True)
    (root / 'vi').mkdir(parents=True)
    for stem in stems:
        cv2.imwrite(str(root / 'vi' / f'{stem}.png'), rgb)
        cv2.imwrite(str(root / 'ir' / f'{stem}.png'), (infrared * 255).astype(np.uint8))


def test_cli_fallback_writes_binary_masks_and_sheet(tmp_path, capsys):
    write_scene(tmp_path / 'data', ['a', 'b'])
    cv2.imwrite(str(tmp_path / 'data' / 'vi' / 'orphan.png'), np.zeros((8, 8), np.uint8))
    out = tmp_path / 'out'
    argv = ['--ir', str(tmp_path / 'data' / 'ir'), '--vi', str(tmp_path / 'data' / 'vi'),
            '--out', str(out)]
    assert masks.main(argv) == 0
    for folder in ('mask_vi', 'mask_ir'):
        for stem in ('a', 'b'):
            mask = read_gray(out / folder / f'{stem}.png')
            assert mask.shape == (96, 128)
            assert set(np.unique(mask)) <= {0, 255}
    assert read_gray(out / 'mask_ir' / 'a.png')[60, 25] == 255
    assert read_gray(out / 'mask_vi' / 'a.png')[60, 25] == 0
    sheet = cv2.imread(str(out / 'contact_sheet.png'))
    assert sheet is not None and sheet.shape[1] == 3 * 320
    captured = capsys.readouterr()
    assert 'orphan.png' in captured.err and '2 written' in captured.out
    assert masks.main(argv + ['--skip-existing']) == 0
    assert '2 kept' in capsys.readouterr().out


def test_cli_errors(tmp_path, capsys):
    write_scene(tmp_path, ['a'])
    base = ['--ir', str(tmp_path / 'ir'), '--vi', str(tmp_path / 'vi'), '--out',
            str(tmp_path / 'out')]
    assert masks.main(base + ['--method', 'gdino-sam']) == 2
    assert '--gdino and --sam' in capsys.readouterr().err
    assert masks.main(['--ir', str(tmp_path / 'nope'), '--vi', str(tmp_path / 'vi'),
                       '--out', str(tmp_path / 'out')]) == 2
    assert 'nope' in capsys.readouterr().err
    with pytest.raises(SystemExit):
        masks.main(['--help'])
    assert '--contrast-threshold' in capsys.readouterr().out


def test_fallback_on_a_real_night_pair(shared_data):
    """MSRS night frame 00959N shows pedestrians that are hot in IR, dark in visible."""
    root = shared_data / 'train' / 'msrs'
    if not (root / 'ir' / '00959N.png').is_file():
        pytest.skip('MSRS pair 00959N not in shared/data/train/msrs')
    rgb = cv2.imread(str(root / 'vi' / '00959N.png'))[:, :, ::-1]
    visible = read_gray(root / 'vi' / '00959N.png').astype(np.float32) / 255
    infrared = read_gray(root / 'ir' / '00959N.png').astype(np.float32) / 255
    mask_vi, mask_ir = masks.discern(masks.FallbackProposer()(visible, infrared, rgb),
                                     visible, infrared)
    ir_only = mask_ir & ~mask_vi
    assert 0 < ir_only.mean() < 0.3
    # The IR-only objects are warmer than the image on average.
    assert infrared[ir_only].mean() > infrared.mean() + 0.1


def _build_tiny_models(folder: Path) -> tuple[Path, Path]:
    """Tiny randomly initialised Grounding DINO and SAM (+ processors) saved to `folder`."""
    import torch
    from transformers import (
        BertConfig,
        BertTokenizerFast,
        GroundingDinoConfig,
        GroundingDinoForObjectDetection,
        GroundingDinoProcessor,
        SamConfig,
        SamModel,
        SamProcessor,
        SwinConfig,
    )
    from transformers.models.grounding_dino.image_processing_pil_grounding_dino import (
        GroundingDinoImageProcessorPil,
    )
    from transformers.models.sam.configuration_sam import (
        SamMaskDecoderConfig,
        SamPromptEncoderConfig,
        SamVisionConfig,
    )
    from transformers.models.sam.image_processing_pil_sam import SamImageProcessorPil

    torch.manual_seed(0)
    gdino, sam = folder / 'gdino', folder / 'sam'
    gdino.mkdir()
    # A word-level BERT vocabulary written here: the tokenizer needs no download.
    vocab = ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]', '.', 'person', 'car', 'bicycle']
    (gdino / 'vocab.txt').write_text('\n'.join(vocab) + '\n')
    tokenizer = BertTokenizerFast(vocab_file=str(gdino / 'vocab.txt'))
    image_processor = GroundingDinoImageProcessorPil(
        size={'shortest_edge': 64, 'longest_edge': 96})
    config = GroundingDinoConfig(
        backbone_config=SwinConfig(image_size=64, embed_dim=8, depths=[1, 1, 1, 1],
                                   num_heads=[1, 1, 1, 1], window_size=2,
                                   out_features=['stage2', 'stage3', 'stage4']),
        text_config=BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1,
                               num_attention_heads=2, intermediate_size=16,
                               max_position_embeddings=64),
        d_model=32, encoder_layers=1, decoder_layers=2, encoder_ffn_dim=16,
        decoder_ffn_dim=16, encoder_attention_heads=2, decoder_attention_heads=2,
        num_queries=10, encoder_n_points=1, decoder_n_points=1, max_text_len=32)
    GroundingDinoForObjectDetection(config).save_pretrained(gdino)
    GroundingDinoProcessor(image_processor=image_processor,
                           tokenizer=tokenizer).save_pretrained(gdino)
    sam_config = SamConfig(
        vision_config=SamVisionConfig(hidden_size=16, num_hidden_layers=1,
                                      num_attention_heads=2, image_size=64, patch_size=16,
                                      output_channels=8, mlp_dim=16, global_attn_indexes=[0],
                                      window_size=2, num_pos_feats=4),
        prompt_encoder_config=SamPromptEncoderConfig(hidden_size=8, image_size=64,
                                                     patch_size=16, mask_input_channels=4),
        mask_decoder_config=SamMaskDecoderConfig(hidden_size=8, num_hidden_layers=1,
                                                 num_attention_heads=2, mlp_dim=16,
                                                 iou_head_hidden_dim=8))
    SamModel(sam_config).save_pretrained(sam)
    SamProcessor(image_processor=SamImageProcessorPil(
        size={'longest_edge': 64}, pad_size={'height': 64, 'width': 64})).save_pretrained(sam)
    return gdino, sam


@pytest.fixture(scope='module')
def tiny_models(tmp_path_factory):
    if importlib.util.find_spec('transformers') is None:
        pytest.skip('transformers is not installed: the Grounding DINO + SAM path is '
                    'untested here (pip install transformers to run it)')
    return _build_tiny_models(tmp_path_factory.mktemp('hf'))


@pytest.mark.slow
def test_gdino_sam_proposer_runs_offline(tiny_models):
    gdino, sam = tiny_models
    # Thresholds 0 keep every box of the random detector, so the whole path runs.
    proposer = masks.GroundedSamProposer(gdino, sam, box_threshold=0.0, text_threshold=0.0)
    visible, infrared, rgb = scene()
    boxes = proposer.boxes(rgb)
    assert boxes.ndim == 2 and boxes.shape[1] == 4 and len(boxes) > 0
    assert (boxes[:, 2] >= boxes[:, 0]).all() and (boxes[:, 3] >= boxes[:, 1]).all()
    objects = proposer(visible, infrared, rgb)
    assert objects and all(o.shape == visible.shape and o.dtype == bool for o in objects)
    # One detector pass per modality, one SAM mask per box.
    assert len(objects) <= 2 * len(boxes)


@pytest.mark.slow
def test_gdino_sam_cli(tiny_models, tmp_path):
    gdino, sam = tiny_models
    write_scene(tmp_path / 'data', ['a'])
    out = tmp_path / 'out'
    assert masks.main(['--ir', str(tmp_path / 'data' / 'ir'), '--vi',
                       str(tmp_path / 'data' / 'vi'), '--out', str(out), '--method',
                       'gdino-sam', '--gdino', str(gdino), '--sam', str(sam),
                       '--box-threshold', '0', '--text-threshold', '0']) == 0
    assert read_gray(out / 'mask_ir' / 'a.png').shape == (96, 128)


@pytest.mark.slow
def test_gdino_sam_missing_folder(tmp_path):
    if importlib.util.find_spec('transformers') is None:
        pytest.skip('transformers is not installed')
    with pytest.raises(FileNotFoundError, match='never downloaded'):
        masks.GroundedSamProposer(tmp_path / 'missing', tmp_path / 'missing')
