//! Visiting every bucket of a tree, and every page those buckets use. Shared by the free-page
//! rebuild on open, statistics and the consistency check's bucket walk.

use super::bucket::Bucket;
use super::error::{Corruption, Result};
use super::layout::{BucketHeader, MAX_BUCKET_DEPTH, Pgid};
use super::tree::{NodeView, PageSet, Pages, Root, TreeSource};

/// What [`each_bucket`] calls: the names leading to a bucket, and the bucket.
pub(crate) type BucketVisitor<'f, 'a> = dyn FnMut(&[&'a [u8]], &Bucket<'a>) -> Result<()> + 'f;

/// Calls `f` for every bucket under (and including) `root`, parents first, with the names leading to
/// it (empty for `root` itself).
pub(crate) fn each_bucket<'a>(root: Bucket<'a>, f: &mut BucketVisitor<'_, 'a>) -> Result<()> {
    let mut path = Vec::new();
    visit(root, &mut path, f)
}

fn visit<'a>(
    bucket: Bucket<'a>,
    path: &mut Vec<&'a [u8]>,
    f: &mut BucketVisitor<'_, 'a>,
) -> Result<()> {
    if path.len() > MAX_BUCKET_DEPTH {
        return Err(bucket
            .tree
            .pages
            .corrupt(Corruption::NestingTooDeep(MAX_BUCKET_DEPTH)));
    }
    f(path, &bucket)?;
    let mut children = Vec::new();
    bucket.for_each(|k, v| {
        if v.is_none() {
            children.push(k);
        }
        Ok(())
    })?;
    for name in children {
        if let Some(child) = bucket.bucket(name)? {
            path.push(name);
            visit(child, path, f)?;
            path.pop();
        }
    }
    Ok(())
}

/// The root bucket of the tree whose header is `root`.
pub(crate) fn root_bucket<'a>(pages: Pages<'a>, root: BucketHeader) -> Bucket<'a> {
    Bucket {
        tree: TreeSource {
            pages,
            root: Root::Page(root.root),
            arena: None,
        },
        sequence: root.sequence,
    }
}

/// Calls `f(first page, page count)` for every run of pages a node of the tree uses (meta and
/// freelist pages excluded).
pub(crate) fn reachable_pages(
    pages: Pages<'_>,
    root: BucketHeader,
    f: &mut dyn FnMut(Pgid, u64) -> Result<()>,
) -> Result<()> {
    let mut seen = PageSet::default();
    each_bucket(root_bucket(pages, root), &mut |_, bucket| {
        bucket
            .tree
            .for_each_node(&mut seen, &mut |view, pgid, _| match view {
                NodeView::Page(p) if pgid != 0 => f(pgid, u64::from(p.header().overflow) + 1),
                _ => Ok(()),
            })
    })
}
