"""The methods, by the names their runs record (``method`` in a checkpoint's configuration and in results.json,
and the middle of a default run folder's name), and the script that trains each.

A new prompt-tuning method is added to ``PROMPT_METHODS`` (and to ``CAPTION_METHODS`` if it reads the
captions), with its loss in ``batch_loss`` of ``prompt_tuning.train`` (without one there it trains as LMPT or
CoOp): ``lmpt/train.py`` offers it, ``lmpt.checkpoint`` checks its runs' configurations as the others', and
``lmpt/test.py`` rebuilds its prompts.
"""
PROMPT_METHODS = ("coop", "lmpt")  # lmpt/train.py's --training_method: class-specific prompts on a frozen CLIP
CAPTION_METHODS = ("lmpt",)  # the methods that read the captions: the class-specific embedding loss
LINEAR_PROBE, FULL_FINETUNE = FINETUNE_METHODS = ("linear-probe", "finetune-full")  # fc.py without, with --from_scratch
ZERO_SHOT = "zero-shot"  # zero_shot_clip/test.py's (it trains nothing)

# the script whose runs each trained method names (in messages that say where a run comes from)
TRAINING_SCRIPT = {**dict.fromkeys(PROMPT_METHODS, "lmpt/train.py"),
                   **dict.fromkeys(FINETUNE_METHODS, "finetune_clip/fc.py")}


def finetune_method(from_scratch):
    """The method of a run of finetune_clip/fc.py: full fine-tuning with ``--from_scratch``, else the linear
    probe."""
    return FULL_FINETUNE if from_scratch else LINEAR_PROBE
