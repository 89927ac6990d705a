"""The folder carried to a lent GPU machine (gpu_pack/, git-ignored), and its check there.

A device call carries at most 64 MiB (tracked files + untracked + carried paths) and
../shared does not travel, so `make gpu-pack` writes what bench/gpu_check.sh and
bench/gpu_train.sh need into gpu_pack/:

    data/train/msrs/{ir,vi}/*.jpg      BT.601 luma, JPEG quality 95 (the only lossy part: the
                                       lossless luma is 36 MB; PSNR ~56 dB, stated in MANIFEST)
    data/eval/msrs/{ir,vi}/*.png       BT.601 luma, lossless PNG (the network, the losses and
                                       occo-eval's metrics only see luma)
    data/{train,eval}/roadscene/...    the original JPEG files, byte for byte (smaller than
                                       any lossless luma of their decoded pixels)
    masks/{msrs,roadscene}/mask_{vi,ir}/*.png   occo-masks output for the training sets
    vgg16_hed_int8.pt                  the HED VGG16 weights, int8 per output channel (+ fp32
                                       scales and biases): 15 MB instead of 59 MB fp32
    MANIFEST.json                      SHA-256 of every file above, the codecs, the subset
                                       and the int8 weights' max feature difference vs fp32

`verify` (the first step of both GPU scripts) checks every checksum, refuses missing or
extra files, and writes the dequantised fp32 HED file for occo-train --vgg-weights.

    python bench/gpu_pack.py pack --data ../shared/data --masks out/gpu_pack_src/masks \\
        --hed ~/.cache/occo_ros/vgg16_hed.pt --out gpu_pack [--pairs N]
    python bench/gpu_pack.py verify gpu_pack --hed-out /tmp/vgg16_hed.pt
"""

from __future__ import annotations

import argparse
from concurrent.futures import ThreadPoolExecutor
import hashlib
import json
import os
from pathlib import Path
import shutil
import sys

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script from a checkout: occo_ros beside bench/

PACK_FORMAT = 1
MANIFEST = 'MANIFEST.json'
HED_PACKED = 'vgg16_hed_int8.pt'
HED_PACKED_KIND = 'occo-gpu-pack-hed-int8'
TRAIN_JPEG_QUALITY = 95
SETS = ('msrs', 'roadscene')
# What each GPU script leaves in $OUT (the device brings back <= 8 files, <= 16 MiB each).
GPU_CHECK_OUTPUTS = ('gpu_check.json', 'gpu_check.md', 'gpu_check.log')
GPU_TRAIN_OUTPUTS = ('gpu_train.json', 'gpu_train.md', 'gpu_train.log', 'fifn_w100_full.pt',
                     'fifn_w025_full.pt')
MAX_OUT_FILES = 8
MAX_OUT_BYTES = 16 * 2 ** 20
CARRY_LIMIT_BYTES = 64 * 2 ** 20
# (width, height) of the eval image the int8 weights' feature difference is measured on.
PROBE_SIZE = (320, 256)


class PackError(RuntimeError):
    """The carried folder is missing, incomplete, altered or not a pack."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open('rb') as handle:
        for block in iter(lambda: handle.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


def folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob('*') if path.is_file())


def _pack_image(source: Path, target: Path, codec: str) -> None:
    """Write one image as `codec`: 'copy' (the file as it is), 'png' or 'jpg' (its luma)."""
    import cv2

    from occo_ros.io.image_pairs import read_gray

    target.parent.mkdir(parents=True, exist_ok=True)
    if codec == 'copy':
        shutil.copyfile(source, target)
        return
    params = ([cv2.IMWRITE_JPEG_QUALITY, TRAIN_JPEG_QUALITY] if codec == 'jpg'
              else [cv2.IMWRITE_PNG_COMPRESSION, 9])
    if not cv2.imwrite(str(target), read_gray(source), params):
        raise OSError(f'cannot write {target}')


def pack_data(data: Path, masks: Path, out: Path, pairs: int | None) -> dict:
    """Images and masks into out/data and out/masks; returns the MANIFEST 'data' record."""
    from occo_ros.io.image_pairs import find_pairs

    jobs, record = [], {}
    for split in ('train', 'eval'):
        for name in SETS:
            scan = find_pairs(data / split / name / 'ir', data / split / name / 'vi')
            chosen = scan.pairs[:pairs] if pairs else scan.pairs
            codec = 'copy' if name == 'roadscene' else ('jpg' if split == 'train' else 'png')
            for pair in chosen:
                for sub, path in (('ir', pair.ir_path), ('vi', pair.vi_path)):
                    suffix = path.suffix if codec == 'copy' else f'.{codec}'
                    jobs.append((path, out / 'data' / split / name / sub /
                                 f'{pair.stem}{suffix}', codec))
                if split == 'train':
                    for sub in ('mask_vi', 'mask_ir'):
                        mask = masks / name / sub / f'{pair.stem}.png'
                        if not mask.is_file():
                            raise PackError(f'{mask} missing: run occo-masks on '
                                            f'{data / split / name} first (make gpu-pack does)')
                        jobs.append((mask, out / 'masks' / name / sub / mask.name, 'copy'))
            record[f'{split}/{name}'] = {
                'pairs': len(chosen), 'of': len(scan.pairs),
                'codec': {'copy': 'original files', 'png': 'luma, lossless PNG',
                          'jpg': f'luma, JPEG quality {TRAIN_JPEG_QUALITY}'}[codec]}
    with ThreadPoolExecutor(os.cpu_count()) as pool:  # cv2 releases the GIL
        list(pool.map(lambda job: _pack_image(*job), jobs))
    return record


def quantize_hed(content: dict) -> dict:
    """int8 per output channel (symmetric) for every weight with >= 2 dims; biases fp32."""
    import torch

    packed = {}
    for key, value in content['state_dict'].items():
        value = value.float()
        if value.dim() < 2:
            packed[key] = value
            continue
        scale = value.abs().flatten(1).amax(dim=1).clamp_min(1e-12) / 127.0
        shape = (-1,) + (1,) * (value.dim() - 1)
        packed[key] = torch.round(value / scale.view(shape)).to(torch.int8)
        packed[key + '.scale'] = scale
    return {'kind': HED_PACKED_KIND, 'state_dict': packed, 'source': content.get('source', {})}


def dequantize_hed(packed: dict) -> dict:
    """The converted-HED content (training.hed format, fp32) of `quantize_hed`'s output."""
    from training.vgg import HED_VGG16_KIND

    state, out = packed['state_dict'], {}
    for key, value in state.items():
        if key.endswith('.scale'):
            continue
        if key + '.scale' in state:
            scale = state[key + '.scale']
            value = value.float() * scale.view((-1,) + (1,) * (value.dim() - 1))
        out[key] = value
    source = dict(packed.get('source', {}), packed=f'int8 per output channel ({HED_PACKED})')
    return {'kind': HED_VGG16_KIND, 'state_dict': out, 'source': source}


def feature_difference(reference: dict, approx: dict, image) -> dict:
    """Max |feature| difference of the loss extractors (training.vgg) with `approx` weights vs
    `reference` weights, on `image` (uint8 HxW luma) repeated to 3 channels like the loss."""
    import torch

    from training.vgg import build_extractor, input_affines

    rgb_affine, gray_affine = input_affines('vgg16')
    x = torch.from_numpy(image).float().div(255.0)[None, None]
    out = {}
    for channels, last, affine, layers in ((3, 'relu5_4', rgb_affine, ('relu4_4', 'relu5_4')),
                                           (1, 'relu1_1', gray_affine, ('relu1_1',))):
        inputs = x.repeat(1, channels, 1, 1)
        with torch.no_grad():
            features = [build_extractor(state, channels, last, 'vgg16', affine)(inputs, layers)
                        for state in (reference, approx)]
        for layer in layers:
            ref, test = features[0][layer], features[1][layer]
            out[layer] = {'max_abs_diff': round(float((ref - test).abs().max()), 5),
                          'max_abs_feature': round(float(ref.abs().max()), 3)}
    return out


def pack(data: Path, masks: Path, hed: Path, out: Path, pairs: int | None) -> dict:
    """Write the whole pack (replacing `out`) and return its manifest."""
    import cv2
    import torch

    from training.hed import read_converted

    if out.exists():
        if not (out / MANIFEST).is_file():
            raise PackError(f'{out} exists and is not a pack; not replacing it')
        shutil.rmtree(out)
    out.mkdir(parents=True)
    data_record = pack_data(data, masks, out, pairs)
    content = read_converted(hed)
    packed = quantize_hed(content)
    torch.save(packed, out / HED_PACKED)
    image = cv2.resize(cv2.imread(str(next((out / 'data' / 'eval' / 'msrs' / 'vi').iterdir())),
                                  cv2.IMREAD_GRAYSCALE), PROBE_SIZE)
    difference = feature_difference(content['state_dict'],
                                    dequantize_hed(packed)['state_dict'], image)
    files = {str(path.relative_to(out)): sha256_file(path)
             for path in sorted(out.rglob('*')) if path.is_file()}
    manifest = {'format': PACK_FORMAT, 'data': data_record, 'files': files,
                'hed': {'from': str(hed), 'fp32_sha256': sha256_file(hed),
                        'stored': 'int8 per output channel, fp32 scales and biases',
                        'feature_difference_vs_fp32': difference}}
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1), encoding='utf-8')
    return manifest


def verify(folder: Path, hed_out: Path | None) -> dict:
    """Check every checksum (no file missing, none extra), write the fp32 HED file to
    `hed_out` when given; returns the manifest. Raises PackError."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding='utf-8'))
    except (OSError, ValueError) as exc:
        raise PackError(f'{folder / MANIFEST} unreadable ({exc}): run `make gpu-pack` and '
                        'carry gpu_pack') from exc
    if manifest.get('format') != PACK_FORMAT:
        raise PackError(f'{folder} has pack format {manifest.get("format")}, expected '
                        f'{PACK_FORMAT}')
    found = {str(path.relative_to(folder)) for path in folder.rglob('*')
             if path.is_file() and path.name != MANIFEST}
    expected = manifest['files']
    problems = [f'missing {name}' for name in sorted(set(expected) - found)]
    problems += [f'not in the manifest: {name}' for name in sorted(found - set(expected))]
    with ThreadPoolExecutor(os.cpu_count()) as pool:
        digests = dict(zip(sorted(found & set(expected)), pool.map(
            lambda name: sha256_file(folder / name), sorted(found & set(expected)))))
    problems += [f'checksum differs: {name}' for name, digest in digests.items()
                 if digest != expected[name]]
    if problems:
        raise PackError(f'{folder}: {len(problems)} problem(s): ' + '; '.join(problems[:5]))
    if hed_out is not None:
        import torch

        packed = torch.load(folder / HED_PACKED, map_location='cpu', weights_only=True)
        hed_out.parent.mkdir(parents=True, exist_ok=True)
        torch.save(dequantize_hed(packed), hed_out)
    return manifest


def check_outputs(folder: Path, expected: tuple[str, ...]) -> list[str]:
    """What is wrong with `folder` as a device call's $OUT: an expected file missing or
    empty, more than MAX_OUT_FILES files, a file too large, too deep or oddly named."""
    files = [path for path in folder.rglob('*') if path.is_file()]
    problems = [f'{name} not written' for name in expected
                if not (folder / name).is_file() or not (folder / name).stat().st_size]
    if len(files) > MAX_OUT_FILES:
        problems.append(f'{len(files)} files, the device brings back {MAX_OUT_FILES}')
    for path in files:
        relative = path.relative_to(folder)
        if path.stat().st_size > MAX_OUT_BYTES:
            problems.append(f'{relative} is over {MAX_OUT_BYTES >> 20} MiB')
        if len(relative.parts) > 3 or not all(
                part.replace('.', '').replace('_', '').replace('-', '').isalnum()
                for part in relative.parts):
            problems.append(f'{relative}: too deep or a name the device does not bring back')
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description='Build or check the folder carried to a GPU '
                                     'machine (see the module docstring).')
    commands = parser.add_subparsers(dest='command', required=True)
    build = commands.add_parser('pack', help='write the pack')
    build.add_argument('--data', type=Path, default=REPO.parent / 'shared' / 'data')
    build.add_argument('--masks', type=Path, default=REPO / 'out' / 'gpu_pack_src' / 'masks',
                       help='occo-masks outputs, one folder per training set')
    build.add_argument('--hed', type=Path, help='converted HED file (default: make '
                       "hed-weights' ~/.cache/occo_ros/vgg16_hed.pt)")
    build.add_argument('--out', type=Path, default=REPO / 'gpu_pack')
    build.add_argument('--pairs', type=int, default=None,
                       help='only the first N pairs of each set (a tiny pack for tests)')
    check = commands.add_parser('verify', help='check the checksums (and unpack the HED file)')
    check.add_argument('folder', type=Path)
    check.add_argument('--hed-out', type=Path, default=None,
                       help='write the dequantised fp32 HED file here')
    outputs = commands.add_parser('check-out', help="check a GPU script's $OUT folder")
    outputs.add_argument('folder', type=Path)
    outputs.add_argument('script', choices=('gpu_check', 'gpu_train'))
    args = parser.parse_args(argv)
    if args.command == 'check-out':
        expected = GPU_CHECK_OUTPUTS if args.script == 'gpu_check' else GPU_TRAIN_OUTPUTS
        problems = check_outputs(args.folder, expected)
        for problem in problems:
            print(f'gpu-pack: {args.script}: {problem}', file=sys.stderr)
        print(sum(path.is_file() for path in args.folder.rglob('*')))
        return 1 if problems else 0
    try:
        if args.command == 'pack':
            from training.hed import default_weights_path

            manifest = pack(args.data, args.masks, args.hed or default_weights_path(),
                            args.out, args.pairs)
            size = folder_bytes(args.out)
            print(json.dumps({'data': manifest['data'], 'hed': manifest['hed']}, indent=1))
            print(f'gpu-pack: {args.out}: {len(manifest["files"])} files, '
                  f'{size / 2 ** 20:.1f} MiB (a device call carries {CARRY_LIMIT_BYTES >> 20} '
                  'MiB with the repository)')
        else:
            manifest = verify(args.folder, args.hed_out)
            print(f'gpu-pack: {args.folder}: {len(manifest["files"])} files verified'
                  + (f'; HED fp32 weights at {args.hed_out}' if args.hed_out else ''))
    except (PackError, OSError, ValueError) as exc:
        print(f'gpu-pack: error: {exc}', file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
