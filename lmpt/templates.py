"""Prompt templates for zero-shot CLIP: the 80 ImageNet templates of the CLIP paper (``imagenet80``), one
(``single``), and the check of a template's form (``check_templates``)."""
from string import Formatter

IMAGENET_TEMPLATES = (
    "a bad photo of a {}.", "a photo of many {}.", "a sculpture of a {}.", "a photo of the hard to see {}.",
    "a low resolution photo of the {}.", "a rendering of a {}.", "graffiti of a {}.", "a bad photo of the {}.",
    "a cropped photo of the {}.", "a tattoo of a {}.", "the embroidered {}.", "a photo of a hard to see {}.",
    "a bright photo of a {}.", "a photo of a clean {}.", "a photo of a dirty {}.", "a dark photo of the {}.",
    "a drawing of a {}.", "a photo of my {}.", "the plastic {}.", "a photo of the cool {}.",
    "a close-up photo of a {}.", "a black and white photo of the {}.", "a painting of the {}.",
    "a painting of a {}.", "a pixelated photo of the {}.", "a sculpture of the {}.", "a bright photo of the {}.",
    "a cropped photo of a {}.", "a plastic {}.", "a photo of the dirty {}.", "a jpeg corrupted photo of a {}.",
    "a blurry photo of the {}.", "a photo of the {}.", "a good photo of the {}.", "a rendering of the {}.",
    "a {} in a video game.", "a photo of one {}.", "a doodle of a {}.", "a close-up photo of the {}.",
    "a photo of a {}.", "the origami {}.", "the {} in a video game.", "a sketch of a {}.", "a doodle of the {}.",
    "a origami {}.", "a low resolution photo of a {}.", "the toy {}.", "a rendition of the {}.",
    "a photo of the clean {}.", "a photo of a large {}.", "a rendition of a {}.", "a photo of a nice {}.",
    "a photo of a weird {}.", "a blurry photo of a {}.", "a cartoon {}.", "art of a {}.", "a sketch of the {}.",
    "a embroidered {}.", "a pixelated photo of a {}.", "itap of the {}.", "a jpeg corrupted photo of the {}.",
    "a good photo of a {}.", "a plushie {}.", "a photo of the nice {}.", "a photo of the small {}.",
    "a photo of the weird {}.", "the cartoon {}.", "art of the {}.", "a drawing of the {}.",
    "a photo of the large {}.", "a black and white photo of a {}.", "the plushie {}.", "a dark photo of a {}.",
    "itap of a {}.", "graffiti of the {}.", "a toy {}.", "itap of my {}.", "a photo of a cool {}.",
    "a photo of a small {}.", "a tattoo of the {}.",
)
SINGLE_TEMPLATE = ("a photo of a {}.",)
TEMPLATES = {"imagenet80": IMAGENET_TEMPLATES, "single": SINGLE_TEMPLATE}
DEFAULT_TEMPLATES = "imagenet80"  # zero_shot_clip/test.py's --templates


def template_fields(template):
    """The format fields of a template, as written ('' for ``{}``, 'name' for ``{name}``, '0!r' for ``{0!r}``).
    Doubled braces are literal and no field; a lone brace raises ValueError."""
    return [field + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "")
            for _, field, spec, conversion in Formatter().parse(template) if field is not None]


def check_templates(templates, source):
    """Refuse (before any work) templates that do not hold exactly one ``{}``, where the class name goes:
    one without it would give every class the same embedding, and another field fails to format."""
    if isinstance(templates, str) or not len(templates):
        raise ValueError(f"{source}: {templates!r}; expected a non-empty sequence of templates such as "
                         f"{SINGLE_TEMPLATE[0]!r}")
    for i, template in enumerate(templates):
        if not isinstance(template, str):
            raise ValueError(f"{source}[{i}]: {template!r} is not text; expected a template such as "
                             f"{SINGLE_TEMPLATE[0]!r}")
        try:
            fields = template_fields(template)
        except ValueError as e:
            raise ValueError(f"{source}[{i}]: cannot read template {template!r} ({e}); expected one '{{}}' "
                             f"where the class name goes (a literal brace is written '{{{{' or '}}}}')") from None
        if fields != [""]:
            found = ("no field" if not fields else ("the field " if len(fields) == 1 else "the fields ")
                     + ", ".join("{" + f + "}" for f in fields))
            raise ValueError(f"{source}[{i}]: template {template!r} has {found}; expected exactly one '{{}}' "
                             f"where the class name goes, such as {SINGLE_TEMPLATE[0]!r}")


for _name, _templates in TEMPLATES.items():  # at import: an edited entry is refused before any run
    check_templates(_templates, f"templates.TEMPLATES[{_name!r}]")
