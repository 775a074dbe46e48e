"""Learning from the user's labels: a projection of the base model's embeddings, trained with
the triplet loss of the FaceNet paper on labelled faces, saved as a model of its own."""
