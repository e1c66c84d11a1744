"""
An imagezmq receiving script (as imagezmq's test_1_receive_images.py and
with_ImageHub.py), with only the import line changed; it prints what it
gets instead of showing it, and stops after COUNT frames.

usage: hub_images.py PORT COUNT [jpg] [pubsub] [wildcard]
"wildcard" opens tcp://*:PORT (every interface) instead of tcp://127.0.0.1:PORT.
"""

import sys

import cv2
import numpy as np

from imageproto import imagezmq

port, count = sys.argv[1], int(sys.argv[2])
jpg = "jpg" in sys.argv[3:]
reqRep = "pubsub" not in sys.argv[3:]
host = "*" if "wildcard" in sys.argv[3:] else "127.0.0.1"

with imagezmq.ImageHub(open_port="tcp://" + host + ":" + port, REQ_REP=reqRep) as image_hub:
    print("READY", flush=True)
    for _ in range(count):
        if jpg:
            sent_from, jpg_buffer = image_hub.recv_jpg()
            image = cv2.imdecode(np.frombuffer(jpg_buffer, dtype="uint8"), -1)
        else:
            sent_from, image = image_hub.recv_image()
        print(sent_from, image.shape[1], image.shape[0], int(image[175, 50, 1]), flush=True)
        if reqRep:
            image_hub.send_reply(b"OK")
print("DONE", flush=True)
