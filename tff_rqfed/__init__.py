"""tff-rqfed: TensorFlow Federated reference implementation of RQFedRec."""
