#!/usr/bin/python3
"""httpbin_diff.py: our examples/httpbin against the real httpbin, endpoint by endpoint.

    /usr/bin/python3 tests/httpbin_diff.py                  # starts both servers itself
    /usr/bin/python3 tests/httpbin_diff.py --ours http://127.0.0.1:8888 --ref http://127.0.0.1:5000
    /usr/bin/python3 tests/httpbin_diff.py --self-test      # the reference against a second reference
    /usr/bin/python3 tests/httpbin_diff.py -k cookies -k /get -v   # some cases, with details
    /usr/bin/python3 tests/httpbin_diff.py --list

Standard library only (http.client, json, socket, subprocess). The reference is Debian's
python3-httpbin (0.7.0, a Flask app) served by werkzeug's threaded server on a free loopback
port (see REF_SCRIPT); ours is examples/httpbin --port 0. Each case of CASES is sent to both;
the status, the headers that matter and the body (as JSON, or byte for byte, or by length,
as the case says) are compared, leaving out what legitimately differs: Date, Server, the port
in Host / "url" / Location / "origin", the order of JSON keys, the case of header names
inside "headers" (httpbin title-cases them; --strict-case compares them too). One line per
case ("ok" / "DIFF: ..."), then "N passed, N failed"; exit status 1 on any difference.

Adding a case: append a C(...) to CASES (see the C class for every field). A case that the
installed reference cannot answer (e.g. /json, which is newer than Debian's 0.7.0) carries a
fixed expectation in `expect=` instead; --self-test skips those.

Known differences: where ours differs from the reference on purpose (a route of our own that the
suite relies on) or because of a choice of tornado.h, the
case names the reason with known='key' (see KNOWN), and leaves out only what differs (mode,
ignore=, fix=, ours_fix=): the rest is still compared. Such a case prints "ok [known: key]", and
the summary lists every key in use with its reason before the last line.
"""

import argparse
import base64
import gzip
import http.client
import json
import os
import re
import select
import socket
import subprocess
import sys
import time
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)

# The reference server: werkzeug's threaded dev server with httpbin's Flask app, on the port
# given as argv[1] (0: any free port), printing the same first line as examples/httpbin.
REF_SCRIPT = r"""
import sys, logging
import httpbin
from werkzeug.serving import make_server
logging.getLogger('werkzeug').setLevel(logging.ERROR)
s = make_server(sys.argv[1], int(sys.argv[2]), httpbin.app, threaded=True)
print('listening on http://%s:%d' % (sys.argv[1], s.server_port), flush=True)
s.serve_forever()
"""

# Response headers compared by default (names are case-insensitive). Content-Length only
# where the body is compared byte for byte or by length (JSON may be spaced differently).
HEADERS = ['Content-Type', 'Location', 'Set-Cookie', 'ETag', 'Cache-Control', 'Last-Modified',
           'WWW-Authenticate', 'Content-Range', 'Accept-Ranges', 'Content-Length',
           'Content-Encoding', 'Proxy-Authenticate', 'X-More-Info']

UUID_RE = r'^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$'
HTTP_DATE_RE = r'^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d\d (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4} \d\d:\d\d:\d\d GMT$'
UA = 'httpbin-diff/1.0'


# Documented, intentional differences: a case that names one as known= leaves out what differs
# and compares the rest. The first four are routes of our own that the suite depends on (their
# paths are httpbin's too); the others are choices of tornado.h itself.
KNOWN = {
    'headers-text': 'ours: /headers answers text, a "Name: value" line per field (tests/soak.c '
                    'looks for "X-Soak: N\\n" in it); httpbin\'s JSON form is in /get and /anything',
    'stream-lines': 'ours: /stream/{n} answers "line N" text lines, uncapped (the abuse and soak '
                    'tests stream millions; the README and interop tests read the lines); httpbin: '
                    'at most 100 JSON lines',
    'delay-ms': 'ours: /delay/{n} waits n MILLISECONDS and answers "done" (README example, '
                'tests/test_examples.c: /delay/100 within 2 s); httpbin: seconds, then JSON',
    'bytes-uncapped': 'ours: /bytes/{n} goes up to 100 MiB (the abuse tests fetch 100 MB) and is a '
                      'pattern; httpbin: at most 102400 random bytes',
    'no-content-type': 'tornado.h always sends a Content-Type (text/plain if none is given); '
                       'httpbin\'s status_code() table leaves these statuses without one',
    'one-content-type': 'tornado.h keeps one Content-Type: a Content-Type argument replaces '
                        'application/json, where httpbin sends both',
    'auth-challenge': 'tn_http_auth_challenge answers its 401 with a text body '
                      '("401 Unauthorized\\n", text/plain); httpbin\'s is empty and untyped',
    'clear-cookie-expires': 'tn_http_clear_cookie writes Expires=Thu, 01 Jan 1970 00:00:01 GMT '
                            '(an expires of 0 means "none" there); httpbin 00:00:00: both long past',
}


class C:
    """One case.

    method, path    the request line (path includes the query string, sent as is)
    headers         [(name, value), ...] sent in this order (duplicates allowed); a User-Agent
                    is added unless one is given; http.client adds Host and
                    Accept-Encoding: identity unless given
    body            bytes or str (str is UTF-8) or None
    name            the case's name (default "METHOD path")
    mode            how bodies compare: 'json' (parsed, key order ignored), 'exact' (bytes),
                    'len' (length only), 'jsonlines' (each line JSON), 'gzip-json' /
                    'deflate-json' (decoded, then JSON), 'utf8' (both valid UTF-8, else
                    ignored), 'none' (ignored)
    compare         the response headers compared (default HEADERS)
    ignore          headers not compared in this case
    header_re       {header: regex}: instead of equal, each side's value must match
    json_re         {dotted.path: regex}: instead of equal, each side's value must match
    status_in       a set of acceptable statuses (for random ones) instead of equal
    min_time        each side must take at least this many seconds
    timeout         seconds for this case (default --timeout)
    expect          a fixed expected response (dict: status, headers {name: value or list},
                    json / body) used instead of asking the reference
    fix             fn(resp) -> None, run on each side's parsed response before comparing
    ours_fix        fn(resp) -> None, run on our raw response only (status, headers, body),
                    before anything else: a known difference normalised away
    known           a key of KNOWN: this case differs from the reference on purpose, and what
                    differs is left out of the comparison (by mode, ignore, fix or ours_fix)
    """

    def __init__(self, method, path, headers=(), body=None, name=None, mode='json', compare=None,
                 ignore=(), header_re=None, json_re=None, status_in=None, min_time=None,
                 timeout=None, expect=None, fix=None, ours_fix=None, known=None):
        self.method, self.path, self.body = method, path, body
        self.headers = list(headers)
        if not any(k.lower() == 'user-agent' for k, _ in self.headers):
            self.headers.append(('User-Agent', UA))
        self.name = name or '%s %s' % (method, path)
        self.mode = mode
        self.compare = list(compare if compare is not None else HEADERS)
        if mode not in ('exact', 'len'):
            self.compare = [h for h in self.compare if h.lower() != 'content-length']
        ignore = {h.lower() for h in ignore}
        self.compare = [h for h in self.compare if h.lower() not in ignore]
        self.header_re = {k.lower(): v for k, v in (header_re or {}).items()}
        self.json_re = json_re or {}
        self.status_in = status_in
        self.min_time = min_time
        self.timeout = timeout
        self.expect = expect
        self.fix = fix
        self.ours_fix = ours_fix
        if known is not None and known not in KNOWN:
            raise ValueError('%s: known=%r is not a key of KNOWN' % (self.name, known))
        self.known = known


def multipart(fields=(), files=(), boundary='httpbin-diff-boundary-7MA4YWxk'):
    """(content_type, body) for fields [(name, value)] and files [(name, filename, ctype or
    None, bytes)], in that order."""
    out = b''
    for name, value in fields:
        out += ('--%s\r\nContent-Disposition: form-data; name="%s"\r\n\r\n' % (boundary, name)).encode()
        out += (value.encode() if isinstance(value, str) else value) + b'\r\n'
    for name, filename, ctype, data in files:
        out += ('--%s\r\nContent-Disposition: form-data; name="%s"; filename="%s"\r\n' %
                (boundary, name, filename)).encode()
        if ctype:
            out += ('Content-Type: %s\r\n' % ctype).encode()
        out += b'\r\n' + data + b'\r\n'
    out += ('--%s--\r\n' % boundary).encode()
    return 'multipart/form-data; boundary=' + boundary, out


def response_headers_fix(r):
    """/response-headers: its JSON holds its own Content-Length, which depends on how the
    JSON is spaced; each side must be self-consistent, and then the value is masked."""
    j = r.get('json')
    if isinstance(j, dict) and 'Content-Length' in j:
        cl = j['Content-Length']
        if cl == str(len(r['body'])) and r['headers'].get('content-length') == [cl]:
            j['Content-Length'] = '<its own length>'
        else:
            j['Content-Length'] = '<inconsistent: %r in JSON, body %d bytes>' % (cl, len(r['body']))


def response_headers_one_ctype_fix(r):
    """'one-content-type': the JSON's Content-Type (two values at httpbin, the one sent at
    ours) is left out; the rest is compared."""
    response_headers_fix(r)
    if isinstance(r.get('json'), dict):
        r['json'].pop('Content-Type', None)


def clear_cookie_epoch(r):
    """'clear-cookie-expires': our Expires, one second past the epoch, read as httpbin's."""
    r['headers']['set-cookie'] = [v.replace('01 Jan 1970 00:00:01 GMT', '01 Jan 1970 00:00:00 GMT')
                                  for v in r['headers'].get('set-cookie', [])]


def status_case(method, code):
    """/status/{code}, compared byte for byte; Content-Type left out where httpbin sends none."""
    if code in NO_CONTENT_TYPE:
        return C(method, '/status/%d' % code, mode='exact', ignore=['Content-Type'], known='no-content-type')
    return C(method, '/status/%d' % code, mode='exact')


# The statuses whose answer httpbin builds with its own header set, so without Content-Type.
NO_CONTENT_TYPE = {301, 302, 303, 305, 307, 401, 402, 407, 418}

MP_TYPE, MP_BODY = multipart(
    fields=[('a', '1'), ('a', '2'), ('note', 'caf\u00e9')],
    files=[('f', 'one.txt', 'text/plain', b'abc'), ('f', 'two.txt', 'text/plain', b'xyz'),
           ('bin', 'b.bin', 'image/x-foo', b'\xff\x00\xfe'), ('raw', 'r.bin', None, b'\xff')])

SLIDESHOW = {'slideshow': {
    'author': 'Yours Truly', 'date': 'date of publication', 'title': 'Sample Slide Show',
    'slides': [{'title': 'Wake up to WonderWidgets!', 'type': 'all'},
               {'items': ['Why <em>WonderWidgets</em> are great', 'Who <em>buys</em> WonderWidgets'],
                'title': 'Overview', 'type': 'all'}]}}

JSON_CT = [('Content-Type', 'application/json')]
FORM_CT = [('Content-Type', 'application/x-www-form-urlencoded')]
AUTH_OK = [('Authorization', 'Basic ' + base64.b64encode(b'user:passwd').decode())]
AUTH_BAD = [('Authorization', 'Basic ' + base64.b64encode(b'user:wrong').decode())]

CASES = [
    # --- request echo ---------------------------------------------------------------------
    C('GET', '/get'),
    C('GET', '/get?a=1&a=2&b=x+y&c=%20z&d=', name='GET /get repeated and encoded args'),
    C('GET', '/get', headers=[('X-Custom-Thing', 'hi'), ('x-lower-case', 'v'), ('X-Dup', 'a'), ('X-Dup', 'b')],
      name='GET /get custom, lower-case and repeated request headers'),
    C('POST', '/get', name='POST /get (405)', mode='none', ignore=['Content-Type'], compare=HEADERS + ['Allow']),
    C('HEAD', '/get', mode='none'),
    C('POST', '/post?q=1', headers=JSON_CT, body='{"k": [1, 2], "s": "t"}', name='POST /post JSON'),
    C('POST', '/post', headers=FORM_CT, body='a=1&a=2&b=&c=x%20y', name='POST /post form, repeated field'),
    C('POST', '/post', headers=[('Content-Type', MP_TYPE)], body=MP_BODY, name='POST /post multipart with files'),
    C('POST', '/post', headers=[('Content-Type', 'text/plain')], body='not json', name='POST /post text body'),
    C('POST', '/post', headers=[('Content-Type', 'text/plain')], body='[1,"2"]', name='POST /post JSON without JSON type'),
    C('POST', '/post', headers=[('Content-Type', 'application/octet-stream')], body=b'hello\xff\x00',
      name='POST /post binary body'),
    C('POST', '/post', headers=JSON_CT, body='{bad', name='POST /post invalid JSON'),
    C('POST', '/post', name='POST /post no body'),
    C('PUT', '/put', headers=JSON_CT, body='{"a": null}'),
    C('PATCH', '/patch', headers=FORM_CT, body='x=1'),
    C('DELETE', '/delete?id=7'),
    C('DELETE', '/delete', headers=JSON_CT, body='{"why": "because"}', name='DELETE /delete with JSON body'),
    C('GET', '/anything'),
    C('POST', '/anything?a=1&a=2', headers=JSON_CT, body='{"x": 1}'),
    C('PUT', '/anything', headers=FORM_CT, body='f=1&f=2'),
    C('PATCH', '/anything', headers=[('Content-Type', 'text/plain')], body='plain'),
    C('DELETE', '/anything'),
    C('TRACE', '/anything'),
    C('HEAD', '/anything', mode='none'),
    C('POST', '/anything', headers=[('Content-Type', MP_TYPE)], body=MP_BODY, name='POST /anything multipart'),
    C('GET', '/anything/foo/bar?x=1'),
    C('POST', '/anything/a%20b/c', headers=JSON_CT, body='[1,2,3]'),
    C('DELETE', '/anything/x', headers=FORM_CT, body='a=1', name='DELETE /anything/x form body'),
    C('PUT', '/anything?q=1', headers=FORM_CT, body='a=1&q=2&%ff=%ff', name='PUT /anything same name in query and form'),
    C('POST', '/anything', body='123', name='POST /anything JSON without Content-Type'),
    # "url" as Werkzeug rebuilds it: the path decoded and quoted again, UTF-8 shown as text
    C('GET', '/anything/a%2fb%7e%C3%A9%ff/%20?x=%7e%C3%A9%ff%20%2f%41&y=%22z%22&&z=%zz&w=a+b',
      name='GET /anything url and args: escapes, UTF-8, invalid bytes'),
    C('GET', '/anything?a=1', headers=[('X-Forwarded-Proto', 'https')], name='GET /anything X-Forwarded-Proto: https'),
    C('GET', '/anything', headers=[('X-Forwarded-Ssl', 'on')], name='GET /anything X-Forwarded-Ssl: on'),
    C('POST', '/post', headers=JSON_CT, body='{"s": "caf\u00e9 \\u00e9 \\n", "n": -1.5e3, "t": true, "z": null, "a": [[], {}]}',
      name='POST /post JSON with escapes, numbers, literals'),
    C('POST', '/post', headers=JSON_CT, body=' [1, 2] \n', name='POST /post JSON with white space around'),
    C('POST', '/post', headers=JSON_CT, body='[1,]', name='POST /post JSON trailing comma (null)'),
    C('POST', '/post', headers=JSON_CT, body='01', name='POST /post JSON leading zero (null)'),
    C('POST', '/post', headers=JSON_CT, body='"\\ud800"', name='POST /post JSON lone surrogate escape'),
    C('POST', '/post', headers=[('Content-Type', 'text/plain')], body=b'\xef\xbb\xbf[1]', name='POST /post JSON after a BOM (null)'),
    C('POST', '/post', headers=[('Content-Type', 'text/plain')], body=b'\xed\xa0\x80', name='POST /post surrogate bytes (data URL)'),
    C('GET', '/get', headers=[('X_Under', 'u'), ('X-Under', 'v'), ('x-b2b-ID', 'w')], name='GET /get underscores, digits in names'),
    C('GET', '/get', headers=[('X-Latin', 'caf\xe9'), ('X-Empty', '')], name='GET /get Latin-1 and empty values'),
    C('GET', '/get', headers=[('Origin', 'http://o.example')],
      compare=HEADERS + ['Access-Control-Allow-Origin', 'Access-Control-Allow-Credentials'], name='GET /get CORS'),
    C('OPTIONS', '/get', mode='none', name='OPTIONS /get',
      compare=HEADERS + ['Allow', 'Access-Control-Allow-Methods', 'Access-Control-Max-Age',
                         'Access-Control-Allow-Origin', 'Access-Control-Allow-Credentials']),
    C('OPTIONS', '/anything/x', headers=[('Access-Control-Request-Headers', 'X-A, X-B'), ('Origin', 'http://o.example')],
      mode='none', compare=HEADERS + ['Allow', 'Access-Control-Allow-Headers', 'Access-Control-Allow-Origin'],
      name='OPTIONS /anything/x CORS preflight'),
    # ours: text lines; the JSON "headers" (names, joining, show_env) is compared in /get and /anything
    C('GET', '/headers', mode='none', ignore=['Content-Type', 'ETag'], known='headers-text'),
    C('GET', '/headers', headers=[('X-ABC-def', '1'), ('Cookie', 'a=b'), ('X-Forwarded-For', '9.9.9.9'), ('Via', '1.1 p')],
      mode='none', ignore=['Content-Type', 'ETag'], known='headers-text', name='GET /headers mixed case, env headers hidden'),
    C('GET', '/headers?show_env=1', headers=[('X-Forwarded-For', '9.9.9.9')], mode='none', ignore=['Content-Type', 'ETag'],
      known='headers-text'),
    C('GET', '/get', headers=[('X-ABC-def', '1'), ('Cookie', 'a=b'), ('X-Forwarded-For', '9.9.9.9'), ('Via', '1.1 p')],
      name='GET /get mixed case, env headers hidden'),
    C('GET', '/anything?show_env=1', headers=[('X-Forwarded-For', '9.9.9.9'), ('Via', '1.1 p')],
      name='GET /anything?show_env=1 env headers shown'),
    C('GET', '/ip'),
    C('GET', '/ip', headers=[('X-Forwarded-For', '1.2.3.4')], name='GET /ip X-Forwarded-For'),
    C('GET', '/ip', headers=[('X-Forwarded-For', '1.2.3.4, 5.6.7.8')], name='GET /ip X-Forwarded-For list'),
    C('GET', '/user-agent'),
    C('GET', '/user-agent', headers=[('User-Agent', 'Mozilla/5.0 (X; Y) z/1')], name='GET /user-agent custom'),
    C('GET', '/user-agent', headers=[('User-Agent', 'caf\xe9')], name='GET /user-agent Latin-1'),
    C('GET', '/uuid', json_re={'uuid': UUID_RE}),

    # --- cookies --------------------------------------------------------------------------
    C('GET', '/cookies'),
    C('GET', '/cookies', headers=[('Cookie', 'a=1; b=x%20y; c="q"; _gauges_unique=1; __utma=2')],
      name='GET /cookies with cookies'),
    C('GET', '/cookies?show_env', headers=[('Cookie', 'a=1; _gauges_unique=1')]),
    C('GET', '/cookies', headers=[('Cookie', 'a=1; a=2')], name='GET /cookies repeated name (the first)'),
    C('GET', '/cookies/set?name=value', mode='none'),
    C('GET', '/cookies/set?a=1&b=two%20words&a=dup', mode='none'),
    C('GET', '/cookies/set?e=&q=a,b&s=x;y&t=%22z%22&u=caf%C3%A9&v=a%5Cb&w=(p)', mode='none',
      name='GET /cookies/set values Werkzeug quotes'),
    C('GET', '/cookies/set/k/v', mode='none'),
    # tn_http_clear_cookie's Expires is one second later than Werkzeug's
    C('GET', '/cookies/delete?name', mode='none', ours_fix=clear_cookie_epoch, known='clear-cookie-expires'),
    C('GET', '/cookies/delete?a&b=x', mode='none', ours_fix=clear_cookie_epoch, known='clear-cookie-expires'),

    # --- redirects ------------------------------------------------------------------------
    C('GET', '/redirect-to?url=/get', mode='exact'),
    C('GET', '/redirect-to?url=http%3A%2F%2Fexample.com%2Fx%3Fy%3D1&status_code=307', mode='exact'),
    C('GET', '/redirect-to?url=/get&status_code=301', mode='exact'),
    C('GET', '/redirect-to?url=/get&status_code=200', mode='exact', name='GET /redirect-to status_code out of 3xx'),
    C('POST', '/redirect-to?url=/anything&status_code=303', mode='exact'),
    C('GET', '/redirect-to?URL=/get&Status_Code=307', mode='exact', name='GET /redirect-to argument names in any case'),
    C('GET', '/redirect-to?url=http://example.com/x%20y', mode='exact', name='GET /redirect-to space in url'),
    C('GET', '/redirect/1', mode='none'),
    C('GET', '/redirect/3', mode='none'),
    C('GET', '/redirect/3?absolute=true', mode='none'),
    C('GET', '/redirect/2?absolute=TRUE', mode='none'),
    C('GET', '/redirect/abc', mode='none', ignore=['Content-Type']),
    C('GET', '/relative-redirect/1', mode='exact'),
    C('GET', '/relative-redirect/3', mode='exact'),
    C('GET', '/absolute-redirect/1', mode='none'),
    C('GET', '/absolute-redirect/3', mode='none'),
    C('GET', '/absolute-redirect/2', headers=[('Host', 'example.org:99')], mode='none',
      name='GET /absolute-redirect/2 Host: example.org:99'),

    # --- response headers, caching --------------------------------------------------------
    C('GET', '/response-headers?X-A=1&X-A=2&freeform=a%20b', compare=HEADERS + ['X-A', 'freeform'],
      fix=response_headers_fix),
    # ours sends one Content-Type (the argument's); the JSON's Content-Type is left out too
    C('GET', '/response-headers?Content-Type=text/plain', fix=response_headers_one_ctype_fix, ignore=['Content-Type'],
      known='one-content-type', name='GET /response-headers Content-Type added twice'),
    C('POST', '/response-headers?k=v', compare=HEADERS + ['k'], fix=response_headers_fix),
    C('GET', '/response-headers?X-B=2&X-A=1&X-B=3', compare=HEADERS + ['X-A', 'X-B'], fix=response_headers_fix,
      name='GET /response-headers grouped by name'),
    C('GET', '/response-headers', fix=response_headers_fix, name='GET /response-headers no arguments'),
    C('GET', '/etag/abc'),
    C('GET', '/etag/abc', headers=[('If-None-Match', '"abc"')], mode='exact', name='GET /etag If-None-Match hit (304)'),
    C('GET', '/etag/abc', headers=[('If-None-Match', 'W/"x", "abc"')], mode='exact', name='GET /etag If-None-Match list, weak'),
    C('GET', '/etag/abc', headers=[('If-None-Match', '*')], mode='exact', name='GET /etag If-None-Match *'),
    C('GET', '/etag/abc', headers=[('If-None-Match', '"zzz"')], name='GET /etag If-None-Match miss (200)'),
    C('GET', '/etag/abc', headers=[('If-Match', '"zzz"')], mode='exact', name='GET /etag If-Match miss (412)'),
    C('GET', '/etag/abc', headers=[('If-Match', '"abc"')], name='GET /etag If-Match hit (200)'),
    C('GET', '/etag/abc', headers=[('If-Match', '*')], name='GET /etag If-Match *'),
    C('GET', '/etag/abc', headers=[('If-Match', '"zzz"'), ('If-None-Match', '"zzz"')],
      name='GET /etag If-None-Match miss wins over If-Match miss'),
    C('GET', '/etag/abc', headers=[('If-None-Match', 'abc')], mode='exact', name='GET /etag If-None-Match unquoted'),
    C('GET', '/cache', header_re={'ETag': r'^[0-9a-f]{32}$', 'Last-Modified': HTTP_DATE_RE}),
    C('GET', '/cache', headers=[('If-Modified-Since', 'Wed, 21 Oct 2015 07:28:00 GMT')], mode='exact',
      name='GET /cache If-Modified-Since (304)'),
    C('GET', '/cache', headers=[('If-None-Match', '"x"')], mode='exact', name='GET /cache If-None-Match (304)'),
    C('GET', '/cache', headers=[('If-None-Match', '')], mode='exact', name='GET /cache empty If-None-Match (304)'),
    C('GET', '/cache', headers=[('If-Modified-Since', '')], header_re={'ETag': r'^[0-9a-f]{32}$', 'Last-Modified': HTTP_DATE_RE},
      name='GET /cache empty If-Modified-Since (200)'),
    C('GET', '/cache/60'),
    C('GET', '/cache/0'),
    C('GET', '/cache/abc', mode='none', ignore=['Content-Type']),

    # --- auth and status ------------------------------------------------------------------
    C('GET', '/basic-auth/user/passwd', headers=AUTH_OK, name='GET /basic-auth good credentials'),
    # ours: tn_http_auth_challenge's 401 (WWW-Authenticate compared, not its text body)
    C('GET', '/basic-auth/user/passwd', headers=AUTH_BAD, mode='none', ignore=['Content-Type'], known='auth-challenge',
      name='GET /basic-auth wrong password (401)'),
    C('GET', '/basic-auth/user/passwd', mode='none', ignore=['Content-Type'], known='auth-challenge',
      name='GET /basic-auth no credentials (401)'),
    C('GET', '/basic-auth/user/passwd', headers=[('Authorization', 'basic ' + base64.b64encode(b'user:passwd').decode())],
      name='GET /basic-auth scheme in lower case'),
    # the statuses of NO_CONTENT_TYPE: everything but the Content-Type compared (status_case)
] + [status_case('GET', n) for n in
     (200, 201, 204, 301, 302, 303, 304, 305, 307, 308, 400, 401, 402, 404, 406, 407, 418, 500, 503)] + [
    status_case('POST', 201),
    status_case('PUT', 418),
    C('GET', '/status/abc', mode='exact'),
    C('GET', '/status/200:1', mode='exact', name='GET /status one code with a weight (400)'),
    C('GET', '/status/200,x', mode='exact', name='GET /status list with a bad element (400)'),
    C('GET', '/status/200,201', mode='exact', status_in={200, 201}),
    C('GET', '/status/200:0,201:1', mode='exact', name='GET /status weighted (weight 0 never chosen)'),

    # --- bodies ---------------------------------------------------------------------------
    C('GET', '/range/100', mode='exact'),
    C('GET', '/range/100', headers=[('Range', 'bytes=0-9')], mode='exact', name='GET /range bytes=0-9 (206)'),
    C('GET', '/range/100', headers=[('Range', 'bytes=10-')], mode='exact', name='GET /range bytes=10-'),
    C('GET', '/range/100', headers=[('Range', 'bytes=-5')], mode='exact', name='GET /range bytes=-5 (suffix)'),
    C('GET', '/range/100', headers=[('Range', 'bytes=0-99')], mode='exact', name='GET /range whole range (200)'),
    C('GET', '/range/100', headers=[('Range', 'bytes=-200')], mode='exact', name='GET /range suffix longer than resource (200)'),
    C('GET', '/range/100', headers=[('Range', 'bytes=50-100')], mode='exact', name='GET /range end past the end (416)'),
    C('GET', '/range/100', headers=[('Range', 'bytes=100-')], mode='exact', name='GET /range start at the end (416)'),
    C('GET', '/range/100', headers=[('Range', 'bytes=9-3')], mode='exact', name='GET /range backwards (416)'),
    C('GET', '/range/30000', headers=[('Range', 'bytes=26000-26009')], mode='exact', name='GET /range pattern offset'),
    C('GET', '/range/0', mode='exact'),
    C('GET', '/range/102401', mode='exact'),
    C('GET', '/range/100', headers=[('Range', 'bytes=0-1,5-6')], mode='exact', name='GET /range two ranges (one open one: 200)'),
    C('GET', '/range/100', headers=[('Range', 'bytes=-0')], mode='exact', name='GET /range bytes=-0 (416)'),
    C('GET', '/range/100', headers=[('Range', 'items=0-5')], mode='exact', name='GET /range another unit (200)'),
    C('GET', '/range/100', headers=[('Range', 'bytes=0-99999999999')], mode='exact', name='GET /range huge end (416)'),
    C('GET', '/range/100', headers=[('Range', 'bytes= 3 - 7')], mode='exact', name='GET /range spaces around numbers'),
    C('HEAD', '/range/100', mode='exact'),
    C('GET', '/bytes/0', mode='len'),
    C('GET', '/bytes/1024', mode='len'),
    C('GET', '/bytes/1024?seed=42', mode='len'),
    # ours: uncapped (the status and the type are compared)
    C('GET', '/bytes/200000', mode='none', known='bytes-uncapped', name='GET /bytes capped at 102400'),
    # ours: "line N" text (the status is compared)
    C('GET', '/stream/3', mode='none', ignore=['Content-Type'], known='stream-lines'),
    C('GET', '/stream/2?x=1', headers=[('X-Thing', 't')], mode='none', ignore=['Content-Type'], known='stream-lines'),
    C('GET', '/stream/0', mode='none', ignore=['Content-Type'], known='stream-lines'),
    C('GET', '/stream/150', mode='none', ignore=['Content-Type'], known='stream-lines', name='GET /stream capped at 100 lines'),
    # ours: milliseconds, "done" (the status is compared; the POST 405 below too)
    C('GET', '/delay/0', mode='none', ignore=['Content-Type', 'ETag'], known='delay-ms'),
    C('GET', '/delay/1?a=b', mode='none', ignore=['Content-Type', 'ETag'], timeout=8, known='delay-ms'),
    C('POST', '/delay/0', mode='none', ignore=['Content-Type'], name='POST /delay (405)'),
    C('GET', '/drip?numbytes=5&duration=0.5&code=201', mode='exact', min_time=0.35, timeout=8),
    C('GET', '/drip?duration=0', mode='exact'),
    C('GET', '/drip?numbytes=3&duration=0&delay=0.5', mode='exact', min_time=0.4, timeout=8),
    C('GET', '/drip?numbytes=0', mode='exact'),
    C('GET', '/drip?numbytes=3&duration=0&code=404', mode='exact'),
    C('GET', '/drip?NUMBYTES=4&duration=0', mode='exact', name='GET /drip argument names are case-sensitive'),
    C('GET', '/base64/SFRUUEJJTiBpcyBhd2Vzb21l', mode='exact'),
    C('GET', '/base64/aGk_Pz4-', mode='exact', name='GET /base64 url-safe alphabet'),
    C('GET', '/base64/aGk=', mode='exact', name='GET /base64 with padding'),
    C('GET', '/base64/%3F%3F', mode='exact', name='GET /base64 nothing of the alphabet (empty)'),
    # the bodies are compared decoded: ours are stored deflate blocks, not compressed, so the
    # Content-Length differs (zlib is not available to the examples)
    C('GET', '/gzip', headers=[('Accept-Encoding', 'gzip')], mode='gzip-json', ignore=['Content-Length']),
    C('GET', '/gzip', mode='gzip-json', ignore=['Content-Length'], name='GET /gzip without Accept-Encoding'),
    C('GET', '/deflate', headers=[('Accept-Encoding', 'deflate')], mode='deflate-json', ignore=['Content-Length']),
    C('GET', '/html', mode='exact'),
    C('GET', '/json', expect={'status': 200, 'headers': {'Content-Type': 'application/json'}, 'json': SLIDESHOW},
      name='GET /json (fixed: upstream httpbin >= 0.9; Debian 0.7.0 has no /json)'),
    C('GET', '/robots.txt', mode='exact'),
    C('GET', '/deny', mode='exact'),
    C('GET', '/encoding/utf8', mode='utf8', name='GET /encoding/utf8 (Debian ships a stub text)'),
    C('GET', '/no/such/endpoint', mode='none', ignore=['Content-Type']),
]


# --------------------------------------------------------------------------------------------
# servers

def _read_listening(proc, what, timeout=15.0):
    deadline = time.time() + timeout
    buf = b''
    while time.time() < deadline:
        r, _, _ = select.select([proc.stdout], [], [], 0.2)
        if r:
            ch = os.read(proc.stdout.fileno(), 1)
            if not ch:
                break
            buf += ch
            if ch == b'\n':
                m = re.search(rb'listening on (http://[^\s]+)', buf)
                if m:
                    return m.group(1).decode()
                buf = b''
        elif proc.poll() is not None:
            break
    proc.kill()
    raise SystemExit('%s did not start (no "listening on" line); output: %r' % (what, buf))


def start_ours(binary):
    proc = subprocess.Popen([binary, '--port', '0'], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    return proc, _read_listening(proc, binary)


def start_ref(python):
    proc = subprocess.Popen([python, '-c', REF_SCRIPT, '127.0.0.1', '0'], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL)
    return proc, _read_listening(proc, 'reference httpbin (%s)' % python)


def stop(proc):
    if proc and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# --------------------------------------------------------------------------------------------
# requests

def parse_base(base):
    m = re.match(r'^http://([^/:]+|\[[^\]]+\]):(\d+)/?$', base)
    if not m:
        raise SystemExit('base URL must be http://HOST:PORT, not %r' % base)
    return m.group(1).strip('[]'), int(m.group(2))


def fetch(base, case, timeout):
    """The response as a dict: status, reason, headers {lower name: [values]}, body, secs;
    or error (a string)."""
    host, port = parse_base(base)
    t0 = time.time()
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        names = {k.lower() for k, _ in case.headers}
        conn.putrequest(case.method, case.path, skip_host='host' in names,
                        skip_accept_encoding='accept-encoding' in names)
        body = case.body.encode() if isinstance(case.body, str) else case.body
        for k, v in case.headers:
            conn.putheader(k, v)
        if body is not None and 'content-length' not in names:
            conn.putheader('Content-Length', str(len(body)))
        elif body is None and case.method in ('POST', 'PUT', 'PATCH'):
            conn.putheader('Content-Length', '0')
        conn.endheaders(body)
        resp = conn.getresponse()
        data = resp.read()
        headers = {}
        for k, v in resp.getheaders():
            headers.setdefault(k.lower(), []).append(v)
        return {'status': resp.status, 'reason': resp.reason, 'headers': headers, 'body': data,
                'secs': time.time() - t0}
    except socket.timeout:
        return {'error': 'timed out after %gs' % timeout, 'secs': time.time() - t0}
    except (OSError, http.client.HTTPException) as e:
        return {'error': '%s: %s' % (type(e).__name__, e), 'secs': time.time() - t0}
    finally:
        conn.close()


# --------------------------------------------------------------------------------------------
# normalisation and comparison

class Side:
    def __init__(self, label, base):
        self.label, self.base = label, base
        host, port = parse_base(base)
        # this server's own authority, as it appears in Host, "url" and Location
        self.authorities = {'%s:%d' % (host, port), '127.0.0.1:%d' % port, 'localhost:%d' % port}

    def subst(self, s):
        for a in self.authorities:
            s = s.replace(a, 'SERVER')
        return s


def norm_json(v, side, opts, key=None):
    if isinstance(v, dict):
        out = {}
        for k, x in v.items():
            nk = k.lower() if key == 'headers' and not opts.strict_case else k
            out[nk] = norm_json(x, side, opts, k)
        return out
    if isinstance(v, list):
        return [norm_json(x, side, opts, key) for x in v]
    if isinstance(v, str):
        v = side.subst(v)
        if key == 'origin':
            v = re.sub(r'^(\[?[0-9a-fA-F.:]+?\]?):\d+$', r'\1', v)  # an origin "ip:port" -> "ip"
        return v
    return v


def norm_header(name, values, side):
    vals = [side.subst(v) for v in values]
    if name == 'content-type':
        vals = [re.sub(r'\s*;\s*', ';', v.strip()).lower() for v in vals]
    elif name == 'set-cookie':
        def cookie(v):
            parts = [p.strip() for p in v.split(';') if p.strip()]
            attrs = sorted(p.split('=', 1)[0].lower() + ('=' + p.split('=', 1)[1] if '=' in p else '')
                           for p in parts[1:])
            return '; '.join(parts[:1] + attrs)
        vals = sorted(cookie(v) for v in vals)
    elif name == 'allow':
        vals = [', '.join(sorted(t.strip().upper() for v in vals for t in v.split(',') if t.strip()))]
    return vals


def decode_body(case, r):
    """Sets r['json'] (or r['json_error']) for the JSON modes."""
    body = r['body']
    try:
        if case.mode == 'gzip-json':
            body = gzip.decompress(body)
        elif case.mode == 'deflate-json':
            body = zlib.decompress(body)
    except Exception as e:  # noqa: BLE001 - any decoding failure is a difference
        r['json_error'] = 'cannot decode %s body: %s' % (case.mode.split('-')[0], e)
        return
    if case.mode in ('json', 'gzip-json', 'deflate-json'):
        try:
            r['json'] = json.loads(body.decode('utf-8'))
        except (ValueError, UnicodeDecodeError) as e:
            r['json_error'] = 'body is not JSON (%s): %r' % (e.__class__.__name__, body[:80])
    elif case.mode == 'jsonlines':
        lines = body.decode('utf-8', 'replace').split('\n')
        if lines and lines[-1] == '':
            lines.pop()
        try:
            r['json'] = [json.loads(l) for l in lines]
        except ValueError:
            r['json_error'] = 'a line is not JSON: %r' % body[:80]


def json_diffs(a, b, path, out, limit=6):
    """Differences between ours (a) and the reference (b), as strings, at most `limit`."""
    if len(out) >= limit:
        return
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b), key=str):
            p = '%s.%s' % (path, k) if path else str(k)
            if k not in a:
                out.append('%s missing (ref %s)' % (p, short(b[k])))
            elif k not in b:
                out.append('%s extra (ours %s)' % (p, short(a[k])))
            else:
                json_diffs(a[k], b[k], p, out, limit)
            if len(out) >= limit:
                return
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            json_diffs(x, y, '%s[%d]' % (path, i), out, limit)
    elif a != b or type(a) is not type(b):
        out.append('%s: ours %s, ref %s' % (path or 'json', short(a), short(b)))


def short(v, n=70):
    s = json.dumps(v, ensure_ascii=False) if not isinstance(v, bytes) else repr(v)
    return s if len(s) <= n else s[:n] + '...'


def get_path(j, dotted):
    for part in dotted.split('.'):
        if not isinstance(j, dict) or part not in j:
            return None, False
        j = j[part]
    return j, True


def set_path(j, dotted, value):
    parts = dotted.split('.')
    for part in parts[:-1]:
        j = j[part]
    j[parts[-1]] = value


def prepare(case, r, side, opts):
    """Normalises one side's response in place; returns a list of self-check failures."""
    problems = []
    if case.ours_fix and side.label == 'ours':
        case.ours_fix(r)
    r['nheaders'] = {k: norm_header(k, v, side) for k, v in r['headers'].items()}
    r['nbody'] = side.subst(r['body'].decode('latin-1')).encode('latin-1')
    decode_body(case, r)
    if case.fix:
        case.fix(r)
    if 'json' in r:
        r['json'] = norm_json(r['json'], side, opts)
        for p, rx in case.json_re.items():
            v, ok = get_path(r['json'], p)
            if ok and isinstance(v, str) and re.search(rx, v):
                set_path(r['json'], p, '<matches %s>' % rx)
    for h, rx in case.header_re.items():
        vals = r['nheaders'].get(h)
        if vals is None:
            problems.append('%s: no %s header' % (side.label, h))
        elif not all(re.search(rx, v) for v in vals):
            problems.append('%s: %s %r does not match %s' % (side.label, h, vals, rx))
        r['nheaders'].pop(h, None)
    if case.min_time and r['secs'] < case.min_time:
        problems.append('%s answered in %.2fs, expected at least %.2fs' % (side.label, r['secs'], case.min_time))
    return problems


def expected_response(case):
    e = case.expect
    headers = {k.lower(): (v if isinstance(v, list) else [v]) for k, v in e.get('headers', {}).items()}
    body = e['body'] if 'body' in e else json.dumps(e.get('json')).encode()
    return {'status': e['status'], 'reason': '', 'headers': headers, 'body': body, 'secs': 0.0}


def compare(case, ours, ref, so, sr, opts):
    if 'error' in ref:
        return ['reference failed: ' + ref['error']]
    if 'error' in ours:
        return ['ours: ' + ours['error'] + ' (ref %d)' % ref['status']]
    diffs = []
    # status
    if case.status_in:
        if ours['status'] not in case.status_in:
            diffs.append('status %d, expected one of %s' % (ours['status'], sorted(case.status_in)))
    elif ours['status'] != ref['status']:
        diffs.append('status %d, ref %d' % (ours['status'], ref['status']))
        if ours['status'] == 404 and ref['status'] != 404:
            return diffs  # the endpoint is missing: the rest is noise
    diffs += prepare(case, ours, so, opts) + prepare(case, ref, sr, opts)
    # headers
    for h in (x.lower() for x in case.compare):
        if h in case.header_re:
            continue
        a, b = ours['nheaders'].get(h), ref['nheaders'].get(h)
        if a == b:
            continue
        if b is None and opts.ignore_extra_headers:
            continue
        diffs.append('%s: ours %s, ref %s' % (h, fmt_hdr(a), fmt_hdr(b)))
    # body
    m = case.mode
    if m == 'exact':
        if ours['nbody'] != ref['nbody']:
            diffs.append('body: ours %s (%d bytes), ref %s (%d bytes)' % (
                short(ours['body'], 60), len(ours['body']), short(ref['body'], 60), len(ref['body'])))
    elif m == 'len':
        if len(ours['body']) != len(ref['body']):
            diffs.append('body length: ours %d, ref %d' % (len(ours['body']), len(ref['body'])))
    elif m == 'utf8':
        for r, lab in ((ours, 'ours'), (ref, 'ref')):
            try:
                r['body'].decode('utf-8')
            except UnicodeDecodeError:
                diffs.append('%s body is not UTF-8' % lab)
    elif m != 'none':
        if 'json_error' in ref:
            diffs.append('reference ' + ref['json_error'])
        elif 'json_error' in ours:
            diffs.append('ours: ' + ours['json_error'])
        else:
            out = []
            json_diffs(ours['json'], ref['json'], '', out)
            diffs += out
    return diffs


def fmt_hdr(v):
    if v is None:
        return '(none)'
    return repr(v[0]) if len(v) == 1 else repr(v)


# --------------------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--ours', help='base URL of a running examples/httpbin (default: start one)')
    ap.add_argument('--ref', help='base URL of a running reference httpbin (default: start one)')
    ap.add_argument('--ours-bin', default=os.path.join(REPO, 'examples', 'httpbin'),
                    help='binary to start as ours (default: examples/httpbin)')
    ap.add_argument('--ref-python', default='/usr/bin/python3',
                    help='python with Debian\'s python3-httpbin (default /usr/bin/python3)')
    ap.add_argument('--self-test', action='store_true',
                    help='compare the reference against a second reference instance (all must pass)')
    ap.add_argument('-k', action='append', default=[], metavar='SUBSTR',
                    help='only cases whose name contains SUBSTR (repeatable: any)')
    ap.add_argument('--timeout', type=float, default=5.0, help='seconds per request (default 5)')
    ap.add_argument('--strict-case', action='store_true',
                    help='compare header-name case inside "headers" too')
    ap.add_argument('--ignore-extra-headers', action='store_true',
                    help='a compared header that the reference omits may be present in ours')
    ap.add_argument('-v', '--verbose', action='store_true', help='show both responses of a DIFF')
    ap.add_argument('--list', action='store_true', help='list the cases and exit')
    opts = ap.parse_args()

    cases = [c for c in CASES if not opts.k or any(k in c.name for k in opts.k)]
    if opts.list:
        for c in cases:
            print(c.name)
        return 0

    procs = []
    try:
        if opts.ref:
            ref_base = opts.ref
        else:
            p, ref_base = start_ref(opts.ref_python)
            procs.append(p)
        if opts.self_test:
            if opts.ours:
                ours_base = opts.ours
            else:
                p, ours_base = start_ref(opts.ref_python)
                procs.append(p)
        elif opts.ours:
            ours_base = opts.ours
        else:
            if not os.access(opts.ours_bin, os.X_OK):
                raise SystemExit('%s not built (make examples/httpbin)' % opts.ours_bin)
            p, ours_base = start_ours(opts.ours_bin)
            procs.append(p)
        so = Side('ours', ours_base)
        sr = Side('ref', ref_base)
        print('ours %s, reference %s%s' % (ours_base, ref_base, ' (self-test)' if opts.self_test else ''))
        passed = failed = skipped = 0
        known = {}
        for c in cases:
            timeout = c.timeout or opts.timeout
            if c.expect is not None:
                if opts.self_test:
                    print('%-64s skip (fixed expectation)' % c.name)
                    skipped += 1
                    continue
                ref = expected_response(c)
            else:
                ref = fetch(ref_base, c, timeout)
            ours = fetch(ours_base, c, timeout)
            diffs = compare(c, ours, ref, so, sr, opts)
            if diffs:
                failed += 1
                print('%-64s DIFF: %s' % (c.name, '; '.join(diffs)))
                if opts.verbose:
                    for lab, r in (('ours', ours), ('ref', ref)):
                        if 'error' in r:
                            print('    %s: %s' % (lab, r['error']))
                        else:
                            print('    %s: %d %s %s' % (lab, r['status'], r['headers'], short(r['body'], 300)))
            else:
                passed += 1
                mark = c.known and not opts.self_test  # a known difference of ours, not the reference's
                if mark:
                    known.setdefault(c.known, []).append(c.name)
                print('%-64s ok%s' % (c.name, ' [known: %s]' % c.known if mark else ''))
        if skipped:
            print('%d skipped' % skipped)
        if known:
            print('known differences (passed, documented in KNOWN):')
            for k in sorted(known):
                print('  %s (%d case%s): %s' % (k, len(known[k]), '' if len(known[k]) == 1 else 's', KNOWN[k]))
        print('%d passed, %d failed' % (passed, failed))
        return 1 if failed else 0
    finally:
        for p in procs:
            stop(p)


if __name__ == '__main__':
    sys.exit(main())
