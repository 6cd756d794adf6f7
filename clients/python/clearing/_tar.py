"""Trees to and from tar archives, for the archive endpoints.

pack() puts a local directory into a pax archive: regular files, directories and symlinks (as
links, never followed); anything else (a socket, a FIFO, a device) is refused by name, as the
daemon would refuse it. extract() writes an archive that came out of a sandbox - its names and
links are the sandbox's choice - beneath a local directory and nowhere else: no absolute name,
no '..', no write through a symlink (every parent is checked with lstat, the file is opened
with O_NOFOLLOW), no hardlinks or special files, no set-id bits. Python's own extraction
filters are not in every Python 3.11 (Debian 12's has none), so this is done here."""
import os
import stat
import tarfile
import tempfile
from typing import IO, List

from .errors import InvalidArgument


def pack(src: str) -> IO[bytes]:
    """A temporary file holding src's tree as a tar archive, positioned at its start."""
    if not os.path.isdir(src):
        raise InvalidArgument('%s is not a directory: upload_tree() sends a directory\'s '
                              'contents (use write_file() for one file)' % src)
    out = tempfile.TemporaryFile()
    try:
        with tarfile.open(fileobj=out, mode='w', format=tarfile.PAX_FORMAT) as tar:
            for root, dirs, files in os.walk(src, followlinks=False):
                dirs.sort()
                for name in sorted(dirs) + sorted(files):
                    _add(tar, src, os.path.join(root, name))
        out.seek(0)
        return out
    except BaseException:
        out.close()
        raise


def _add(tar: tarfile.TarFile, src: str, path: str) -> None:
    st = os.lstat(path)
    ti = tarfile.TarInfo(os.path.relpath(path, src))
    ti.mode = stat.S_IMODE(st.st_mode) & 0o777
    ti.mtime = int(st.st_mtime)
    if stat.S_ISDIR(st.st_mode):
        ti.type = tarfile.DIRTYPE
        tar.addfile(ti)
    elif stat.S_ISLNK(st.st_mode):
        ti.type = tarfile.SYMTYPE
        ti.linkname = os.readlink(path)
        tar.addfile(ti)
    elif stat.S_ISREG(st.st_mode):
        ti.type = tarfile.REGTYPE
        ti.size = st.st_size
        with open(path, 'rb') as f:
            tar.addfile(ti, f)
    else:
        raise InvalidArgument('%s is not a regular file, a directory or a symlink: the daemon '
                              'takes no special files; move it out of the tree' % path)


def _parts(name: str) -> List[str]:
    if name.startswith('/'):
        raise InvalidArgument('the archive names an absolute path %r: not extracted' % name)
    parts = [p for p in name.split('/') if p not in ('', '.')]
    if '..' in parts:
        raise InvalidArgument("the archive names %r, which has '..': not extracted" % name)
    return parts


def _parent(dest: str, parts: List[str]) -> str:
    """The member's directory beneath dest, made as needed; never through a symlink."""
    d = dest
    for p in parts[:-1]:
        d = os.path.join(d, p)
        try:
            st = os.lstat(d)
        except FileNotFoundError:
            os.mkdir(d, 0o755)
            continue
        if not stat.S_ISDIR(st.st_mode):
            raise InvalidArgument('%s is in the way of the archive (not a directory; a symlink '
                                  'is never followed): not extracted' % d)
    return d


def _clear(path: str) -> None:
    """Removes what is at path unless it is a directory (a symlink is removed, not followed)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        raise InvalidArgument('%s is a directory where the archive has a file: not extracted'
                              % path)
    os.unlink(path)


def extract(archive: IO[bytes], dest: str) -> int:
    """Extracts archive beneath dest (made if missing); returns the entries written."""
    os.makedirs(dest, exist_ok=True)
    count = 0
    with tarfile.open(fileobj=archive, mode='r:*') as tar:
        for m in tar:
            parts = _parts(m.name)
            if not parts:
                continue
            parent = _parent(dest, parts)
            path = os.path.join(parent, parts[-1])
            mode = m.mode & 0o777
            if m.isdir():
                try:
                    st = os.lstat(path)
                    if not stat.S_ISDIR(st.st_mode):
                        raise InvalidArgument('%s is in the way of the archive\'s directory: '
                                              'not extracted' % path)
                except FileNotFoundError:
                    os.mkdir(path, mode | 0o700)
            elif m.issym():
                _clear(path)
                os.symlink(m.linkname, path)
            elif m.isreg():
                _clear(path)
                src = tar.extractfile(m)
                assert src is not None
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                             | os.O_CLOEXEC, mode)
                with os.fdopen(fd, 'wb') as f, src:
                    while True:
                        buf = src.read(1 << 20)
                        if not buf:
                            break
                        f.write(buf)
            else:
                continue  # hardlinks and special files: never made on the caller's host
            count += 1
    return count
