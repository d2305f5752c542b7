"""The ``mrsr models`` command: list, verify (and recompute), add, set a default, write the cards."""

from __future__ import annotations

import argparse
from pathlib import Path

from mrsr.errors import existing_file
from mrsr.io import clean_stale_temporaries, write_text
from mrsr.zoo.commit import recover
from mrsr.zoo.manifest import NAME_RULE, ZooError, read_manifest, zoo_dir


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = ("List the networks shipped with mrsr (scale, parameters, test PSNR gain over bicubic, "
                          "CPU time, the default per scale); verify them; add one; write their model cards.")
    parser.add_argument("--verify", action="store_true",
                        help="check the manifest, every shipped file's SHA-256 and every recipe")
    parser.add_argument("--recompute", action="store_true",
                        help="with --verify: evaluate every shipped network again on the sample and compare with its card")
    parser.add_argument("--config", type=Path, help="with --verify: the profile to check recipes against "
                        "(default: the profile each network records, where this is a clone)")
    parser.add_argument("--sample", type=Path, help="the embedded sample folder (default data/btp-sample)")
    parser.add_argument("--add", type=existing_file, metavar="WEIGHTS",
                        help="ship trained weights (models/PROFILE/seedK/JOB.safetensors with its .json sidecar), "
                             "evaluated here on the sample's test split of their profile")
    parser.add_argument("--per-image", type=existing_file, help="with --add: an evaluation CSV of these weights; "
                        "refused if it disagrees with their own evaluation")
    parser.add_argument("--name", help=f"with --add: shipped name, {NAME_RULE} (default MODEL-xSCALE)")
    parser.add_argument("--replace", action="store_true", help="with --add: replace a network of that name")
    parser.add_argument("--trained-on", help="with --add: the training machine (default: this machine's CPU)")
    parser.add_argument("--threads", type=int, default=0, help="with --add: torch threads for the CPU time (0: all)")
    parser.add_argument("--runs", type=int, default=20, help="with --add: timed passes for the CPU time (default 20)")
    parser.add_argument("--default", metavar="NAME", help="make NAME the default network of its scale")
    parser.add_argument("--message", help="with --default: why (kept in the manifest's changelog)")
    parser.add_argument("--cards", type=Path, metavar="MD", help="write the model cards (docs/model-zoo.md)")
    parser.add_argument("--zoo", type=Path, help=argparse.SUPPRESS)  # another zoo folder (tests)


def run(args: argparse.Namespace) -> int:
    from mrsr.zoo.cards import model_cards, table
    from mrsr.zoo.checks import verify
    from mrsr.zoo.shipping import ship, set_default

    if args.recompute and not args.verify:
        raise ZooError("--recompute: only with --verify")
    if args.add or args.default:
        recover(zoo_dir(args.zoo))  # first: a committed change's temporaries are not stale
        for stale in clean_stale_temporaries(zoo_dir(args.zoo)):
            print(f"removed {stale}: left by an interrupted mrsr models")
    if args.add:
        name, card = ship(args.add, name=args.name, replace=args.replace, machine=args.trained_on, folder=args.zoo,
                          threads=args.threads, runs=args.runs, sample=args.sample, per_image=args.per_image)
        print(f"shipped {name}: x{card.scale}, test PSNR {card.test['psnr']:.2f} dB "
              f"({card.test['gain_db']:+.2f} dB over bicubic), {card.cpu['ms_per_slice']:.1f} ms/slice")
    if args.default:
        scale = set_default(args.default, args.message or "", args.zoo)
        print(f"default at x{scale}: {args.default}")
    if args.cards:
        write_text(args.cards, model_cards(args.zoo))
        print(f"wrote {args.cards}")
    if args.verify:
        problems, notes = verify(args.config, args.zoo, args.recompute, args.sample)
        for line in notes:
            print(f"note: {line}")
        for line in problems:
            print(f"FAILED {line}")
        if problems:
            return 2
        print(f"verified {len(read_manifest(args.zoo).models)} shipped networks"
              + (" (test figures recomputed)" if args.recompute else ""))
    if not (args.add or args.default or args.cards or args.verify):
        print(table(args.zoo))
    return 0
