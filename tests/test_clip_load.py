"""clip.load: where checkpoints are looked for, which files are read, the errors, preprocess, writing."""
import random
import shutil
import sys
import warnings
from pathlib import Path

import pytest
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import clip  # noqa: E402
from tiny_clip import make_tiny_clip, tiny_clip_config, write_tiny_clip  # noqa: E402

# OpenAI's released model names and the file names the project expects for them (the table).
RELEASED_FILES = {
    "RN50": "RN50.pt", "RN101": "RN101.pt", "RN50x4": "RN50x4.pt", "RN50x16": "RN50x16.pt",
    "RN50x64": "RN50x64.pt", "ViT-B/32": "ViT-B-32.pt", "ViT-B/16": "ViT-B-16.pt", "ViT-L/14": "ViT-L-14.pt",
    "ViT-L/14@336px": "ViT-L-14-336px.pt",
}


@pytest.fixture(autouse=True)
def no_env_folder(monkeypatch):
    monkeypatch.delenv("LMPT_PRETRAINED_DIR", raising=False)


@pytest.fixture(scope="module")
def vit_file(tmp_path_factory):
    return write_tiny_clip(tmp_path_factory.mktemp("vit") / "tiny-vit.pt", arch="vit", fmt="torchscript")


def same_weights(model, reference):
    ours, theirs = model.state_dict(), reference.state_dict()
    return set(ours) == set(theirs) and all(torch.equal(ours[k], theirs[k].to(ours[k].dtype)) for k in ours)


def test_available_models_are_the_nine_released_names():
    assert clip.available_models() == list(RELEASED_FILES)


@pytest.mark.parametrize("name", list(RELEASED_FILES))
def test_missing_released_file_names_path_and_file(name, tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        clip.load(name, device="cpu", download_root=str(tmp_path))
    message = str(info.value)
    assert str(tmp_path / RELEASED_FILES[name]) in message
    assert RELEASED_FILES[name] in message
    assert "OpenAI" in message and "released" in message


def test_default_folder_is_pretrained_in_the_repo_and_env_overrides_it(monkeypatch, tmp_path):
    assert clip.pretrained_dir() == ROOT / "pretrained"
    monkeypatch.setenv("LMPT_PRETRAINED_DIR", str(tmp_path / "env"))
    assert clip.pretrained_dir() == tmp_path / "env"
    assert clip.pretrained_dir(tmp_path / "arg") == tmp_path / "arg"  # download_root wins over the env


def test_names_resolve_to_files_in_the_folder(monkeypatch, tmp_path, vit_file):
    reference = make_tiny_clip("vit")
    (tmp_path / "arg").mkdir()
    (tmp_path / "env").mkdir()
    shutil.copyfile(vit_file, tmp_path / "arg" / "ViT-B-16.pt")
    shutil.copyfile(vit_file, tmp_path / "env" / "ViT-L-14-336px.pt")
    model, _ = clip.load("ViT-B/16", device="cpu", download_root=str(tmp_path / "arg"))
    assert same_weights(model, reference.half())  # the archive holds fp16-rounded weights
    monkeypatch.setenv("LMPT_PRETRAINED_DIR", str(tmp_path / "env"))
    model, _ = clip.load("ViT-L/14@336px", device="cpu")
    assert same_weights(model, reference.half())
    with pytest.raises(FileNotFoundError, match="ViT-L-14-336px.pt"):  # download_root wins over the env
        clip.load("ViT-L/14@336px", device="cpu", download_root=str(tmp_path / "arg"))


def test_unknown_path_names_the_path_tried(tmp_path):
    missing = tmp_path / "nowhere" / "my-clip.pt"
    with pytest.raises(FileNotFoundError) as info:
        clip.load(str(missing), device="cpu")
    assert str(missing) in str(info.value)
    assert "OpenAI" in str(info.value)


def test_random_bytes_are_refused_with_what_was_expected(tmp_path):
    path = tmp_path / "RN50.pt"
    path.write_bytes(random.Random(0).randbytes(4096))  # seeded: the same bytes (and messages) every run
    with pytest.raises(ValueError) as info:
        clip.load("RN50", device="cpu", download_root=str(tmp_path))
    message = str(info.value)
    assert str(path) in message and "not a CLIP checkpoint" in message
    assert "TorchScript" in message and "state dict" in message


@pytest.mark.parametrize("content", [{"foo": torch.zeros(3)}, {"state_dict": {"module.bar": torch.ones(2)}}, [1, 2]],
                         ids=["unrelated-keys", "nested-unrelated", "a-list"])
def test_saved_object_without_clip_keys_is_refused(content, tmp_path):
    path = tmp_path / "other.pt"
    torch.save(content, path)
    with pytest.raises(ValueError) as info:
        clip.load(str(path), device="cpu")
    message = str(info.value)
    assert str(path) in message and "not a CLIP checkpoint" in message
    if isinstance(content, dict):
        assert "token_embedding.weight" in message  # says which keys were expected


def test_clip_keys_with_wrong_shapes_are_refused(tmp_path):
    state = make_tiny_clip("vit").state_dict()
    state["visual.ln_post.weight"] = torch.ones(5)
    path = tmp_path / "broken.pt"
    torch.save(state, path)
    with pytest.raises(ValueError, match="visual.ln_post.weight"):
        clip.load(str(path), device="cpu")


@pytest.mark.parametrize("wrap", ["state_dict", "model", "module-prefix", "state_dict+module-prefix"])
def test_nested_and_prefixed_state_dicts_load(wrap, tmp_path):
    reference = make_tiny_clip("resnet", seed=4)
    state = reference.state_dict()
    if "module-prefix" in wrap:
        state = {"module." + k: v for k, v in state.items()}
    if wrap.startswith("state_dict"):
        state = {"state_dict": state, "epoch": 3}
    elif wrap == "model":
        state = {"model": state, "optimizer": {"lr": 0.1}}
    path = tmp_path / "wrapped.pt"
    torch.save(state, path)
    model, _ = clip.load(str(path), device="cpu")
    assert same_weights(model, reference)  # fp32 state dicts keep full precision on the CPU


def test_jit_true_warns_and_loads_the_python_model(vit_file):
    with pytest.warns(UserWarning, match="jit=True") as record:
        model, _ = clip.load(str(vit_file), device="cpu", jit=True)
    assert isinstance(model, clip.CLIP) and not model.training
    assert "model.visual.input_resolution" in str(record[0].message)  # what jit-era code should read instead
    assert model.visual.input_resolution == tiny_clip_config("vit")["image_resolution"]


def test_preprocess_matches_open_clip_openai_transform(vit_file):
    transform_module = pytest.importorskip("open_clip.transform")
    constants = pytest.importorskip("open_clip.constants")
    assert clip.CLIP_MEAN == tuple(constants.OPENAI_DATASET_MEAN)
    assert clip.CLIP_STD == tuple(constants.OPENAI_DATASET_STD)
    _, preprocess = clip.load(str(vit_file), device="cpu")
    resolution = tiny_clip_config("vit")["image_resolution"]
    reference = transform_module.image_transform(resolution, is_train=False, mean=constants.OPENAI_DATASET_MEAN,
                                                 std=constants.OPENAI_DATASET_STD)
    generator = torch.Generator().manual_seed(0)
    pixels = (torch.rand(45, 70, 4, generator=generator) * 255).to(torch.uint8).numpy()
    for image in (Image.fromarray(pixels, "RGBA"), Image.fromarray(pixels[..., 0], "L")):
        ours = preprocess(image)
        assert ours.shape == (3, resolution, resolution)
        assert torch.allclose(ours, reference(image), atol=1e-6)
    assert torch.allclose(clip._transform(resolution)(image), ours)


def test_save_checkpoint_formats_and_atomic_write(tmp_path):
    model = make_tiny_clip("resnet", seed=5)
    script_path = clip.save_checkpoint(model, tmp_path / "a.pt", fmt="torchscript")
    plain_path = clip.save_checkpoint(model, tmp_path / "b.pt", fmt="state_dict")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.pt", "b.pt"]  # no temporary files left
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        archive = torch.jit.load(str(script_path), map_location="cpu")
    assert isinstance(archive, torch.jit.ScriptModule)
    released = archive.state_dict()
    state = model.state_dict()
    assert set(released) == set(state) | {"input_resolution", "context_length", "vocab_size"}
    assert int(released["input_resolution"]) == model.visual.input_resolution
    for key, value in state.items():
        if value.is_floating_point():
            assert released[key].dtype == torch.float16 and torch.equal(released[key], value.half()), key
        else:
            assert torch.equal(released[key], value), key
    plain = torch.load(str(plain_path), map_location="cpu", weights_only=True)
    assert set(plain) == set(state) and all(torch.equal(plain[k], state[k]) for k in state)
    with pytest.raises(ValueError, match="fmt"):
        clip.save_checkpoint(model, tmp_path / "c.pt", fmt="onnx")
    assert not (tmp_path / "c.pt").exists()


def test_save_checkpoint_replaces_an_existing_file(tmp_path):
    path = tmp_path / "tiny.pt"
    path.write_bytes(b"old")
    clip.save_checkpoint(make_tiny_clip("vit", seed=6), path, fmt="state_dict")
    model, _ = clip.load(str(path), device="cpu")
    assert same_weights(model, make_tiny_clip("vit", seed=6))


def test_load_model_runs_on_preprocessed_images_and_tokens(vit_file):
    model, preprocess = clip.load(str(vit_file), device=torch.device("cpu"))
    pixels = torch.rand(50, 40, 3, generator=torch.Generator().manual_seed(0))
    image = Image.fromarray((pixels * 255).to(torch.uint8).numpy())
    with torch.no_grad():
        logits_per_image, logits_per_text = model(preprocess(image)[None], clip.tokenize(["a dog", "a cat"]))
    assert logits_per_image.shape == (1, 2) and logits_per_text.shape == (2, 1)
    assert torch.isfinite(logits_per_image).all()
