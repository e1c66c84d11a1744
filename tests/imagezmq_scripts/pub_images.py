"""
An imagezmq PUB/SUB sending script (as imagezmq's test_pub_send_num_images.py
and pub_sub_broadcast.py): the sender binds tcp://*:PORT and hubs connect to
it.  Only the import line is changed; it sends COUNT frames, one every
INTERVAL seconds, instead of looping until Ctrl-C.

usage: pub_images.py PORT COUNT MSG [INTERVAL] [jpg]
"{i}" in MSG is replaced by the frame's index.
"""

import sys
import time

import cv2
import numpy as np

from imageproto import imagezmq

port, count, msg = sys.argv[1], int(sys.argv[2]), sys.argv[3]
interval = float(sys.argv[4]) if len(sys.argv) > 4 else 0.02
jpg = "jpg" in sys.argv[5:]

sender = imagezmq.ImageSender(connect_to="tcp://*:" + port, REQ_REP=False)

for i in range(count):
    image = np.zeros((400, 400, 3), dtype="uint8")
    green = (0, 255, 0)
    cv2.rectangle(image, (50, 50), (300, 300), green, 5)
    cv2.putText(image, str(i), (100, 150), cv2.FONT_HERSHEY_SIMPLEX, 2, (0, 255, 255), 4)
    text = msg.replace("{i}", str(i))
    if jpg:
        ret_code, jpg_buffer = cv2.imencode(".jpg", image, [int(cv2.IMWRITE_JPEG_QUALITY), 95])
        reply = sender.send_jpg(text, jpg_buffer)
    else:
        reply = sender.send_image(text, image)
    print("sent", i, reply, flush=True)
    time.sleep(interval)
sender.close()
print("DONE", flush=True)
