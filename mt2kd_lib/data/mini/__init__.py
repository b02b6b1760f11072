"""egs/mini: a synthetic tri-task corpus (speech from espeak-ng/flite voices, sound events from numpy),
generated deterministically from a seed so the whole MT2KD experiment runs offline on a small CPU box."""
