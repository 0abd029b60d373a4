# The hello-world from Tornado's documentation (tornadoweb.org, "Hello, world"), with the
# port taken from argv[1], bound to 127.0.0.1, and the body "Hello, world!" (13 bytes, as
# every other peer). Run with Debian's /usr/bin/python3 (python3-tornado).
import asyncio
import sys

import tornado.web


class MainHandler(tornado.web.RequestHandler):
    def get(self):
        self.write("Hello, world!")


def make_app():
    return tornado.web.Application([
        (r"/", MainHandler),
    ])


async def main():
    app = make_app()
    app.listen(int(sys.argv[1]) if len(sys.argv) > 1 else 8888, address="127.0.0.1")
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main())
