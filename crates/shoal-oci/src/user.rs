//! `--user name|uid[:group|gid]` resolved against the image's /etc/passwd and /etc/group, as
//! runc resolves a user string (pure: the caller reads the files). Hand-written because the
//! crates that parse these files read the host's, not an image's, through libc.

use crate::error::OciError;
use crate::settings::UserDb;

/// The ids the container's process runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedUser {
    pub uid: u32,
    pub gid: u32,
    /// Groups of /etc/group that list the user (only when no group was given, as runc).
    pub additional_gids: Vec<u32>,
    pub name: Option<String>,
}

struct Passwd<'a> {
    name: &'a str,
    uid: u32,
    gid: u32,
}

struct Group<'a> {
    name: &'a str,
    gid: u32,
    members: Vec<&'a str>,
}

fn passwd_entries(text: &str) -> impl Iterator<Item = Passwd<'_>> {
    records(text).filter_map(|f| {
        Some(Passwd {
            name: f.first()?,
            uid: f.get(2)?.parse().ok()?,
            gid: f.get(3)?.parse().ok()?,
        })
    })
}

fn group_entries(text: &str) -> impl Iterator<Item = Group<'_>> {
    records(text).filter_map(|f| {
        Some(Group {
            name: f.first()?,
            gid: f.get(2)?.parse().ok()?,
            members: f
                .get(3)
                .map(|m| m.split(',').filter(|s| !s.is_empty()).collect())
                .unwrap_or_default(),
        })
    })
}

/// Colon-separated records, comments and blank lines skipped.
fn records(text: &str) -> impl Iterator<Item = Vec<&str>> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.split(':').collect())
}

fn numeric(s: &str) -> Option<u32> {
    s.parse::<u32>().ok().filter(|n| *n <= i32::MAX as u32)
}

/// Resolves `user` (empty: root) against `db`. A name that is not in the files is an error
/// naming it; a uid or gid that is not is used as it is (gid 0 for an unknown uid).
pub fn resolve(user: &str, db: UserDb<'_>) -> Result<ResolvedUser, OciError> {
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let u = if u.is_empty() { "0" } else { u };
    let passwd = db.passwd.unwrap_or("");
    let entry = match numeric(u) {
        Some(uid) => passwd_entries(passwd).find(|p| p.uid == uid),
        None => Some(
            passwd_entries(passwd)
                .find(|p| p.name == u)
                .ok_or_else(|| OciError::UnknownUser(u.to_string()))?,
        ),
    };
    let uid = numeric(u).or(entry.as_ref().map(|p| p.uid)).unwrap_or(0);
    let name = entry.as_ref().map(|p| p.name.to_string());
    let groups = db.group.unwrap_or("");
    let (gid, additional_gids) = match g.filter(|g| !g.is_empty()) {
        Some(g) => {
            let gid = match numeric(g) {
                Some(gid) => gid,
                None => group_entries(groups)
                    .find(|e| e.name == g)
                    .map(|e| e.gid)
                    .ok_or_else(|| OciError::UnknownGroup(g.to_string()))?,
            };
            (gid, vec![])
        }
        None => {
            let gid = entry.as_ref().map(|p| p.gid).unwrap_or(0);
            let extra = match &name {
                Some(n) => group_entries(groups)
                    .filter(|e| e.gid != gid && e.members.contains(&n.as_str()))
                    .map(|e| e.gid)
                    .collect(),
                None => vec![],
            };
            (gid, extra)
        }
    };
    Ok(ResolvedUser {
        uid,
        gid,
        additional_gids,
        name,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
        # a comment\n\
        nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n\
        app:x:1000:1000::/home/app:/bin/sh\n";
    const GROUP: &str = "root:x:0:\nwheel:x:10:root,app\napp:x:1000:\ndocker:x:999:app\n";
    const DB: UserDb<'static> = UserDb {
        passwd: Some(PASSWD),
        group: Some(GROUP),
    };

    fn ids(user: &str) -> String {
        match resolve(user, DB) {
            Ok(r) => format!(
                "{}:{} {:?} {}",
                r.uid,
                r.gid,
                r.additional_gids,
                r.name.unwrap_or_default()
            ),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn names_and_ids_resolve_as_runc_does() {
        assert_eq!(ids(""), "0:0 [10] root");
        assert_eq!(ids("app"), "1000:1000 [10, 999] app");
        assert_eq!(ids("1000"), "1000:1000 [10, 999] app");
        assert_eq!(ids("app:docker"), "1000:999 [] app");
        assert_eq!(ids("nobody:0"), "65534:0 [] nobody");
        assert_eq!(ids("4242"), "4242:0 [] ", "an unknown uid runs with gid 0");
        assert_eq!(ids("4242:4343"), "4242:4343 [] ");
    }

    #[test]
    fn unknown_names_are_errors_naming_them() {
        assert_eq!(
            ids("postgres"),
            "unable to find user postgres: no matching entries in passwd file"
        );
        assert_eq!(
            ids("app:staff"),
            "unable to find group staff: no matching entries in group file"
        );
        let none = UserDb::default();
        assert_eq!(
            resolve("app", none).unwrap_err().to_string(),
            "unable to find user app: no matching entries in passwd file",
            "an image without /etc/passwd knows no names"
        );
        assert_eq!(resolve("7:8", none).unwrap().gid, 8);
    }
}
