"""
An imagezmq PUB/SUB receiving script (as imagezmq's
test_sub_receive_num_images.py and pub_sub_receive.py): the hub connects to
the publishing sender at tcp://127.0.0.1:PORT.  Only the import line is
changed; it prints what it gets instead of showing it, and stops after COUNT
frames (COUNT 0: never).

usage: sub_images.py PORT COUNT [jpg] [thread]
"thread" receives in a daemon thread, as pub_sub_receive.py's
VideoStreamSubscriber does.
"""

import sys
import threading

import cv2
import numpy as np

from imageproto import imagezmq

port, count = sys.argv[1], int(sys.argv[2])
jpg = "jpg" in sys.argv[3:]


class VideoStreamSubscriber:
    def __init__(self, hostname, port):
        self.hostname = hostname
        self.port = port
        self._stop = False
        self._data_ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=())
        self._thread.daemon = True
        self._thread.start()

    def receive(self, timeout=15.0):
        flag = self._data_ready.wait(timeout=timeout)
        if not flag:
            raise TimeoutError(
                "Timeout while reading from subscriber tcp://{}:{}".format(self.hostname, self.port))
        self._data_ready.clear()
        return self._data

    def _run(self):
        receiver = imagezmq.ImageHub("tcp://{}:{}".format(self.hostname, self.port), REQ_REP=False)
        print("READY", flush=True)
        while not self._stop:
            self._data = receiver.recv_jpg()
            self._data_ready.set()
        receiver.close()

    def close(self):
        self._stop = True


if "thread" in sys.argv[3:]:
    receiver = VideoStreamSubscriber("127.0.0.1", port)
    i = 0
    while count == 0 or i < count:
        msg, frame = receiver.receive()
        image = cv2.imdecode(np.frombuffer(frame, dtype="uint8"), -1)
        print(msg, image.shape[1], image.shape[0], int(image[175, 50, 1]), flush=True)
        i += 1
    receiver.close()
else:
    image_hub = imagezmq.ImageHub(open_port="tcp://127.0.0.1:" + port, REQ_REP=False)
    print("READY", flush=True)
    i = 0
    while count == 0 or i < count:
        if jpg:
            image_name, jpg_buffer = image_hub.recv_jpg()
            image = cv2.imdecode(np.frombuffer(jpg_buffer, dtype="uint8"), -1)
        else:
            image_name, image = image_hub.recv_image()
        print(image_name, image.shape[1], image.shape[0], int(image[175, 50, 1]), flush=True)
        i += 1
    image_hub.close()
print("DONE", flush=True)
