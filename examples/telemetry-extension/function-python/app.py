def handler(event, context):
    for n in range(event.get("lines", 1)):
        print(f"line {n}")
    if event.get("fail"):
        raise RuntimeError("asked to fail")
    return {"requestId": context.aws_request_id}
