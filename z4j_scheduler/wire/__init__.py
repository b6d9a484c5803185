"""The fire protocol between scheduler and brain: messages, frame signing, gRPC stubs."""
