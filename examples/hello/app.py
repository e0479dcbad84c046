"""A plain Python handler: module-level state survives between warm invokes."""

import os

invocations = 0


def handler(event, context):
    global invocations
    invocations += 1
    print(f"hello, {event.get('name', 'world')} (invoke {invocations} in this environment)")
    return {
        "greeting": f"hello, {event.get('name', 'world')}",
        "warm_invocations": invocations,
        "task_root": os.environ["LAMBDA_TASK_ROOT"],
        "remaining_ms": context.get_remaining_time_in_millis(),
    }
