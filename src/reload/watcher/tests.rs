//! Which paths the watcher watches and which events concern it.

use super::*;

#[test]
fn a_plain_file_is_watched_through_its_directory() {
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().canonicalize().unwrap();
    let f = dir.path().join("portcullis.toml");
    std::fs::write(&f, "").unwrap();
    let set = WatchSet::of(std::slice::from_ref(&f));
    assert_eq!(set.dirs, BTreeSet::from([real.clone()]));
    assert!(concerns(&set.names, &real.join("portcullis.toml")));
    // The editor's temp file and an unrelated log file do not count.
    assert!(!concerns(&set.names, &real.join(".portcullis.toml.swp")));
    assert!(!concerns(&set.names, &real.join("access.log")));
}

#[test]
fn a_kubernetes_style_symlink_swap_concerns_the_file() {
    // portcullis.toml -> ..data/portcullis.toml, ..data -> ..2026_1
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().canonicalize().unwrap();
    std::fs::create_dir(d.join("..2026_1")).unwrap();
    std::fs::write(d.join("..2026_1/portcullis.toml"), "").unwrap();
    std::os::unix::fs::symlink("..2026_1", d.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/portcullis.toml", d.join("portcullis.toml")).unwrap();
    let set = WatchSet::of(&[d.join("portcullis.toml")]);
    // Both the directory of the name and that of the real file.
    assert!(set.dirs.contains(&d));
    assert!(set.dirs.contains(&d.join("..2026_1")));
    // The swap renames a new symlink over ..data: that concerns the file.
    assert!(concerns(&set.names, &d.join("..data")));
    // Removing the old directory does too.
    assert!(concerns(&set.names, &d.join("..2026_1")));
    assert!(!concerns(&set.names, &d.join("..2026_2_tmp")));
}

#[test]
fn own_reads_are_not_changes() {
    use notify::event::*;
    assert!(!changes(&EventKind::Access(AccessKind::Open(
        AccessMode::Any
    ))));
    assert!(!changes(&EventKind::Access(AccessKind::Close(
        AccessMode::Read
    ))));
    assert!(changes(&EventKind::Access(AccessKind::Close(
        AccessMode::Write
    ))));
    assert!(changes(&EventKind::Modify(ModifyKind::Name(
        RenameMode::To
    ))));
    assert!(changes(&EventKind::Modify(ModifyKind::Data(
        DataChange::Any
    ))));
    assert!(changes(&EventKind::Create(CreateKind::File)));
    assert!(changes(&EventKind::Remove(RemoveKind::Any)));
}

#[test]
fn only_new_names_count_as_appearing() {
    use notify::event::*;
    assert!(appears(&EventKind::Create(CreateKind::File)));
    assert!(appears(&EventKind::Create(CreateKind::Folder)));
    assert!(appears(&EventKind::Modify(ModifyKind::Name(
        RenameMode::To
    ))));
    // Appending to a log file beside the config is not a retry.
    assert!(!appears(&EventKind::Modify(ModifyKind::Data(
        DataChange::Any
    ))));
    assert!(!appears(&EventKind::Access(AccessKind::Close(
        AccessMode::Write
    ))));
    assert!(!appears(&EventKind::Remove(RemoveKind::File)));
}

#[test]
fn fingerprint_follows_content_not_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("c.toml");
    std::fs::write(&f, "a").unwrap();
    let a = fingerprint(std::slice::from_ref(&f));
    std::fs::write(&f, "a").unwrap();
    assert_eq!(
        fingerprint(std::slice::from_ref(&f)),
        a,
        "same bytes rewritten"
    );
    std::fs::write(&f, "b").unwrap();
    assert_ne!(fingerprint(std::slice::from_ref(&f)), a);
    std::fs::remove_file(&f).unwrap();
    assert_ne!(
        fingerprint(std::slice::from_ref(&f)),
        a,
        "a missing file is a change"
    );
}
