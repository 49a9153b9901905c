//! Walking the difference between two versions of a persistent map (`imbl::OrdMap`): the
//! walk skips what the versions share, so it costs the size of the change. Each change is
//! given as the key with the value before (`None`: added) and after (`None`: removed).

use imbl::OrdMap;
use imbl::ordmap::DiffItem;

/// Every key whose value differs between `old` and `new`, with both values.
pub fn changes<'a, K, V>(
    old: &'a OrdMap<K, V>,
    new: &'a OrdMap<K, V>,
) -> impl Iterator<Item = (&'a K, Option<&'a V>, Option<&'a V>)> + 'a
where
    K: Ord + Clone,
    V: Clone + PartialEq,
{
    old.diff(new).map(|d| match d {
        DiffItem::Add(k, v) => (k, None, Some(v)),
        DiffItem::Update {
            old: (k, a),
            new: (_, b),
        } => (k, Some(a), Some(b)),
        DiffItem::Remove(k, v) => (k, Some(v), None),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn added_changed_and_removed_keys_with_both_sides() {
        let old: OrdMap<&str, u32> = [("a", 1u32), ("b", 2), ("c", 3)].into_iter().collect();
        let mut new = old.clone();
        new.insert("b", 20);
        new.remove("c");
        new.insert("d", 4);
        let got: Vec<_> = changes(&old, &new).collect();
        assert_eq!(
            got,
            [
                (&"b", Some(&2), Some(&20)),
                (&"c", Some(&3), None),
                (&"d", None, Some(&4)),
            ]
        );
        assert_eq!(changes(&old, &old.clone()).count(), 0);
    }
}
