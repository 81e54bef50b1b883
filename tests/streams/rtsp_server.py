"""A real RTSP server on 127.0.0.1 for the stream tests: GStreamer's RTSP server serving an H.264 mp4.
Run with the SYSTEM python (python3-gi): /usr/bin/python3 rtsp_server.py PORT FILE.mp4 [MOUNT]."""

import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402

Gst.init(None)
port, path = sys.argv[1], sys.argv[2]
mount = sys.argv[3] if len(sys.argv) > 3 else "/cam"
server = GstRtspServer.RTSPServer()
server.set_address("127.0.0.1")
server.set_service(port)
factory = GstRtspServer.RTSPMediaFactory()
factory.set_launch(f'( filesrc location="{path}" ! qtdemux ! h264parse ! rtph264pay name=pay0 pt=96 )')
factory.set_shared(True)
server.get_mount_points().add_factory(mount, factory)
server.attach(None)
print("ready", flush=True)
GLib.MainLoop().run()
