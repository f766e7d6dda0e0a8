"""Prints the scalars of the TensorBoard event files in DIR as JSON, read by
TensorBoard's own EventAccumulator (what its scalars dashboard reads, checking
each record's CRCs): {"tag": [[step, value], ...], ...}. Run with the project
venv's python (scripts/setup.sh installs tensorboard there):

    tensorboard_read.py DIR
"""
import json
import sys

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def main():
    accumulator = EventAccumulator(sys.argv[1])
    accumulator.Reload()
    scalars = {tag: [[event.step, event.value] for event in accumulator.Scalars(tag)]
               for tag in accumulator.Tags()["scalars"]}
    print(json.dumps(scalars))


if __name__ == "__main__":
    main()
