#!/usr/bin/env python3
"""The code interpreter's bridge (lib/service/code_bridge.py), its output cap, on the host: the
cap counts UTF-8 bytes, as an exec's caps do, and a cut falls before the character that would
cross it (never inside one); the answer's line stays within the daemon's line cap (8 bytes of
JSON per byte of output_cap) whatever the characters. The bridge is imported, not run (no
kernel: the integration suite's test_code.py runs it for real).

usage: test_code_bridge.py SOURCE-ROOT
"""
import importlib.util
import io
import json
import os
import sys
import unittest

sys.dont_write_bytecode = True
ROOT = sys.argv.pop(1) if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), '..', '..')
SPEC = importlib.util.spec_from_file_location(
    'code_bridge', os.path.join(os.path.abspath(ROOT), 'lib', 'service', 'code_bridge.py'))
bridge = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(bridge)


def stream(cell, name, text):
    cell.on({'header': {'msg_type': 'stream'}, 'content': {'name': name, 'text': text}})


def utf8_len(s):
    return len(s.encode('utf-8', 'surrogatepass'))


class Cap(unittest.TestCase):
    def test_ascii_fits_exactly(self):
        # The control: output of exactly the cap is kept whole, not truncated.
        c = bridge.Cell(1024)
        stream(c, 'stdout', 'a' * 1024)
        self.assertEqual(''.join(c.stdout), 'a' * 1024)
        self.assertFalse(c.truncated)
        stream(c, 'stdout', 'b')
        self.assertTrue(c.truncated)
        self.assertEqual(''.join(c.stdout), 'a' * 1024)

    def test_counts_bytes_not_characters(self):
        c = bridge.Cell(1024)
        stream(c, 'stdout', '\u00e9' * 600)  # 1200 bytes, 600 characters
        out = ''.join(c.stdout)
        self.assertTrue(c.truncated)
        self.assertEqual(out, '\u00e9' * 512)  # counting characters would keep all 600
        self.assertEqual(utf8_len(out), 1024)

    def test_cut_before_a_character_that_would_cross(self):
        for ch, size in (('\u20ac', 3), ('\U0001f600', 4), ('\u00e9', 2)):
            c = bridge.Cell(1024)
            text = 'ab' + ch * 1000
            stream(c, 'stdout', text)
            out = ''.join(c.stdout)
            self.assertTrue(c.truncated)
            n = utf8_len(out)
            self.assertLessEqual(n, 1024)
            self.assertGreater(n, 1024 - size)  # the cut is at the last whole character
            self.assertTrue(text.startswith(out))
            out.encode('utf-8')  # whole characters only: no lone surrogate, no broken byte

    def test_shared_by_streams_and_results(self):
        c = bridge.Cell(1024)
        stream(c, 'stdout', 'x' * 1000)
        stream(c, 'stderr', '\u20ac' * 10)  # 30 bytes, room for 24: 8 characters
        self.assertEqual(''.join(c.stderr), '\u20ac' * 8)
        self.assertTrue(c.truncated)
        c.on({'header': {'msg_type': 'execute_result'},
              'content': {'data': {'text/plain': 'late'}, 'execution_count': 1}})
        self.assertEqual(c.result, {})  # no room left: nothing of it

    def test_lone_surrogate_counts_its_bytes(self):
        c = bridge.Cell(1024)
        stream(c, 'stdout', 'a' * 1020 + '\ud800' + 'b')  # 1020 + 3 + 1 bytes
        self.assertEqual(''.join(c.stdout), 'a' * 1020 + '\ud800' + 'b')
        self.assertFalse(c.truncated)
        c = bridge.Cell(1024)
        stream(c, 'stdout', 'a' * 1022 + '\ud800')  # would be 1025: cut before it
        self.assertEqual(''.join(c.stdout), 'a' * 1022)
        self.assertTrue(c.truncated)

    def test_json_value_whole_or_dropped(self):
        c = bridge.Cell(1024)
        small = {'a': [1, 2, 3]}
        c.on({'header': {'msg_type': 'display_data'},
              'content': {'data': {'application/json': small}}})
        self.assertEqual(c.displays, [{'application/json': small}])
        self.assertFalse(c.truncated)
        big = {'k': 'v' * 2000}
        c.on({'header': {'msg_type': 'display_data'},
              'content': {'data': {'application/json': big, 'text/plain': 'x'}}})
        self.assertTrue(c.truncated)
        self.assertEqual(c.displays[-1], {'text/plain': 'x'})

    def test_dropped_values_take_no_room(self):
        # A JSON value or an image too large for the room left is dropped whole (an image cut
        # short is corrupt) and takes no room from the outputs after it.
        c = bridge.Cell(1024)
        c.on({'header': {'msg_type': 'display_data'},
              'content': {'data': {'image/png': 'A' * 2000}}})
        c.on({'header': {'msg_type': 'display_data'},
              'content': {'data': {'application/json': {'k': 'v' * 2000}}}})
        self.assertTrue(c.truncated)
        self.assertEqual(c.displays, [])
        c.on({'header': {'msg_type': 'display_data'},
              'content': {'data': {'image/png': 'B' * 1000}}})
        self.assertEqual(c.displays, [{'image/png': 'B' * 1000}])  # the room was all there

    def test_entries_count_and_empties_drop(self):
        # As the daemon's bundle (code.c): each value kept costs its type's name and 8 besides
        # its bytes, and an empty value is dropped, so thousands of tiny or empty displays stay
        # within the cap. The control: one display of one byte is kept.
        def display(c, data):
            c.on({'header': {'msg_type': 'display_data'}, 'content': {'data': data}})
        c = bridge.Cell(1024)
        display(c, {'text/plain': 'd', 'text/html': ''})
        self.assertEqual(c.displays, [{'text/plain': 'd'}])
        entry = len('text/plain') + bridge.ENTRY_COST + 1
        self.assertEqual(c.used, entry)
        for _ in range(3000):
            display(c, {'text/plain': 'd'})
        self.assertEqual(len(c.displays), 1024 // entry)
        self.assertTrue(c.truncated)
        c = bridge.Cell(1024)
        for _ in range(3000):
            display(c, {'text/plain': '', 'text/html': ''})
        self.assertEqual(c.displays, [])
        self.assertEqual(c.used, 0)
        self.assertFalse(c.truncated)

    def test_error_value_counts(self):
        # An exception's message is output like any other: a huge one is cut at the cap.
        c = bridge.Cell(1024)
        c.on({'header': {'msg_type': 'error'},
              'content': {'ename': 'ValueError', 'evalue': 'v' * 100000, 'traceback': ['tb']}})
        self.assertEqual(c.error['name'], 'ValueError')  # positive control: the error is kept
        self.assertTrue(c.truncated)
        self.assertLessEqual(len(c.error['value']) + len(c.error['traceback']), 1024)

    def test_line_within_the_daemons_cap(self):
        # The worst characters for JSON escaping fill the cap: the answer's line stays within
        # 8 bytes a byte of the cap (lib/service/code.c's line cap), emoji included.
        for ch in ('\x01', '\U0001f600', '\u20ac', '"'):
            c = bridge.Cell(4096)
            stream(c, 'stdout', ch * 10000)
            line = json.dumps(bridge.finish(c, 'ok', None), separators=(',', ':'))
            self.assertLessEqual(len(line.encode()), 8 * 4096 + 1024, ch)


class DaemonReadable(unittest.TestCase):
    """What the bridge says, the daemon's parser (jansson) reads, and counts as the bridge did:
    floats as it writes them, no integer beyond 64 bits, no NaN, no lone surrogate."""

    def json_display(self, cap, value, **more):
        c = bridge.Cell(cap)
        data = {'application/json': value}
        data.update(more)
        c.on({'header': {'msg_type': 'display_data'}, 'content': {'data': data}})
        return c

    def test_floats_count_as_the_daemon_writes_them(self):
        # 0.1 is "0.1" to Python and "0.10000000000000001" to jansson: 50 of them are 1001
        # bytes to the daemon, which drops a value its cap cannot hold; the bridge must too.
        entry = len('application/json') + bridge.ENTRY_COST
        whole = 1 + 50 * len('0.10000000000000001,')
        c = self.json_display(entry + whole, [0.1] * 50)  # the control: exactly room for it
        self.assertEqual(c.displays, [{'application/json': [0.1] * 50}])
        self.assertEqual(c.used, entry + whole)
        self.assertFalse(c.truncated)
        c = self.json_display(entry + whole - 1, [0.1] * 50)
        self.assertEqual(c.displays, [])
        self.assertTrue(c.truncated)
        for x, text in ((1.0, '1.0'), (1e16, '10000000000000000.0'), (1e20, '1e20'),
                        (1e-05, '1.0000000000000001e-5'), (-2.5e-300, '-2.5e-300')):
            self.assertEqual(bridge.real_text(x), text)

    def test_values_it_cannot_carry_are_not_offered(self):
        # An integer beyond 64 bits, NaN or an infinity would make the daemon refuse the whole
        # answer line: the JSON value is left out, the display's text stays. The control: a
        # 64-bit integer is carried.
        c = self.json_display(4096, {'n': (1 << 63) - 1}, **{'text/plain': 'big'})
        self.assertEqual(c.displays, [{'application/json': {'n': (1 << 63) - 1},
                                       'text/plain': 'big'}])
        for bad in ({'n': 1 << 63}, [-(1 << 63) - 1], float('nan'), [float('inf')],
                    '{"n": 1e999}', 'not json'):
            c = self.json_display(4096, bad, **{'text/plain': 'big'})
            self.assertEqual(c.displays, [{'text/plain': 'big'}], bad)
            self.assertFalse(c.truncated)
        c = self.json_display(4096, '{"a": [1, 2]}')  # a JSON text is its value
        self.assertEqual(c.displays, [{'application/json': {'a': [1, 2]}}])

    def test_lone_surrogate_said_as_replacement(self):
        c = bridge.Cell(1024)
        stream(c, 'stdout', 'a\ud800b\udfffc')
        self.assertEqual(c.used, 1 + 3 + 1 + 3 + 1)  # the control: counted, as U+FFFD is
        out = io.StringIO()
        saved, bridge.OUT = bridge.OUT, out
        try:
            bridge.say(bridge.finish(c, 'ok', None))
        finally:
            bridge.OUT = saved
        line = out.getvalue()
        self.assertIn('a\\ufffdb\\ufffdc', line)
        self.assertNotRegex(line, r'\\ud[89a-f]')


if __name__ == '__main__':
    unittest.main(verbosity=2)
