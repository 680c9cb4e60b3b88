"""The voices folder as it is on disk now: every profile in it, each file's error, and the stamps
(size, modification time) of the files they are made of, to tell when any of them changed (a
profile edited in the File editor, a voice file copied over Samba)."""

from __future__ import annotations

from pathlib import Path

from .voices import VoiceProfile, profile_paths

Stamp = tuple[int, int]  # (st_mtime_ns, st_size)


def file_stamp(path: Path) -> Stamp | None:
    """`path`'s (modification time, size); None when it cannot be read."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_size


def profile_files(profile: VoiceProfile) -> tuple[Path, ...]:
    """The profile's YAML and the local files it loads."""
    files = [profile.path]
    if profile.upstream is None:
        params = profile.whisperspeech
        files += [Path(ref) for ref in (params.t2s, params.s2a) if ref and Path(ref).is_absolute()]
        if params.speaker is not None:
            files.append(params.speaker)
    if profile.rvc is not None:
        files += [profile.rvc.model] + ([profile.rvc.index] if profile.rvc.index else [])
    return tuple(files)


def profile_stamp(profile: VoiceProfile) -> tuple[Stamp | None, ...]:
    """The stamps of everything `profile` is made of: it changed when this did."""
    return tuple(file_stamp(path) for path in profile_files(profile))


def folder_stamp(folder: Path, profiles: list[VoiceProfile]) -> tuple[object, ...]:
    """A value that changes when a profile file appears, goes or changes, or a file one of
    `profiles` loads does (cheap: one `stat` a file)."""
    try:
        yaml_files = profile_paths(folder)
    except OSError:
        return ()
    stamps: list[object] = [(path, file_stamp(path)) for path in yaml_files]
    stamps += [(p.path, profile_stamp(p)) for p in profiles]
    return tuple(stamps)
