"""
An imagezmq sending script (as imagezmq's test_1_send_images.py and
with_ImageSender.py), with only the import line changed; it sends COUNT
frames instead of looping until Ctrl-C.

usage: send_images.py PORT COUNT MSG [jpg] [pubsub]
MSG is sent with every frame; "{i}" in it is replaced by the frame's index
and "{t}" by the time (per-frame messages like "name|index|time").
"""

import sys
import time

import cv2
import numpy as np

from imageproto import imagezmq

port, count, msg = sys.argv[1], int(sys.argv[2]), sys.argv[3]
jpg = "jpg" in sys.argv[4:]
reqRep = "pubsub" not in sys.argv[4:]

sender = imagezmq.ImageSender(connect_to="tcp://127.0.0.1:" + port, REQ_REP=reqRep)
for i in range(count):
    image = np.zeros((400, 400, 3), dtype="uint8")
    cv2.rectangle(image, (50, 50), (300, 300), (0, 255, 0), 5)
    cv2.putText(image, str(i), (100, 150), cv2.FONT_HERSHEY_SIMPLEX, 2, (0, 255, 255), 4)
    text = msg.replace("{i}", str(i)).replace("{t}", "%.3f" % time.time())
    if jpg:
        ret_code, jpg_buffer = cv2.imencode(".jpg", image, [int(cv2.IMWRITE_JPEG_QUALITY), 95])
        reply = sender.send_jpg(text, jpg_buffer)
    else:
        reply = sender.send_image(text, image)
    print("sent", i, reply, flush=True)
    if not reqRep:
        time.sleep(0.02)
sender.close()
print("DONE", flush=True)
