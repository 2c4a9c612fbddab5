"""Shared test set-up: quiet TensorFlow, the TF backend, and a guard against empty runs."""

import gc
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
# TensorFlow turns its oneDNN CPU kernels on by default only on some x86 CPUs; without them (e.g.
# on AMD EPYC) a dilated Conv2DTranspose and a depthwise conv with unequal strides have no CPU
# kernel at all. The same kernels on every machine keep the suite's results machine-independent.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")


def pytest_collection_finish(session):
    # TensorFlow, Keras and the test modules are imported by now: hundreds of thousands of
    # objects that live as long as the process. Freezing them keeps Python's full garbage
    # collections (which TFLite conversions and model builds trigger) from scanning them
    # again and again; only what the tests create is collected, as before.
    gc.collect()
    gc.freeze()


def pytest_sessionfinish(session, exitstatus):
    # A run that collected nothing must fail loudly (pytest's exit code 5), never pass.
    if session.testscollected == 0:
        print("\nkcnn: no tests were collected; treating the run as a failure.")
        session.exitstatus = 5
