//! The operator's price list (`--catalog FILE`): the sizes a VM may be
//! moved to and what each costs a month. A CSV with the header
//! `name,vcpus,mem_gib,price_month`, in any column order, more columns
//! allowed and ignored (a cloud's export carries many), read by the csv
//! crate. Anything that is not a usable size is an error naming the file,
//! line and column: a report must not quietly leave sizes out of the
//! choice.

use std::path::{Path, PathBuf};
use std::sync::Arc;

/// One size a VM can have.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub name: Arc<str>,
    pub vcpus: u32,
    pub mem_gib: f64,
    pub price_month: f64,
}

/// The sizes, cheapest first (ties: fewer vCPUs, less memory, name), so
/// the first that fits is the target.
#[derive(Debug, Clone, PartialEq)]
pub struct Catalog {
    pub path: PathBuf,
    entries: Vec<Entry>,
}

/// Why a catalog cannot be used, naming where.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("cannot read catalog {path} (--catalog): {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("catalog {path} (--catalog), line {line}: {why}")]
    Line {
        path: PathBuf,
        line: u64,
        why: String,
    },
    #[error("catalog {path} (--catalog), line {line}, column {column}: {why}")]
    Field {
        path: PathBuf,
        line: u64,
        column: String,
        why: String,
    },
}

const COLUMNS: [&str; 4] = ["name", "vcpus", "mem_gib", "price_month"];

/// A VM's memory matches an entry's within this share: clouds sell
/// "16 GiB" that guests report a little under.
const SAME_MEMORY: f64 = 0.02;

impl Catalog {
    pub fn load(path: &Path) -> Result<Catalog, CatalogError> {
        let text = std::fs::read(path).map_err(|error| CatalogError::Read {
            path: path.to_path_buf(),
            error,
        })?;
        Catalog::parse(path, &text)
    }

    fn parse(path: &Path, text: &[u8]) -> Result<Catalog, CatalogError> {
        let line_err = |line: u64, why: String| CatalogError::Line {
            path: path.to_path_buf(),
            line,
            why,
        };
        let mut reader = csv::ReaderBuilder::new()
            .trim(csv::Trim::All)
            .from_reader(text);
        let header = reader
            .headers()
            .map_err(|e| line_err(1, e.to_string()))?
            .clone();
        let mut at = [0; COLUMNS.len()];
        for (i, name) in COLUMNS.iter().enumerate() {
            at[i] = header.iter().position(|h| h == *name).ok_or_else(|| {
                line_err(
                    1,
                    format!("the header lacks `{name}` (it needs {})", COLUMNS.join(",")),
                )
            })?;
        }
        let mut entries: Vec<Entry> = Vec::new();
        for record in reader.records() {
            let record = record.map_err(|e| {
                let line = e.position().map_or(0, |p| p.line());
                line_err(line, e.to_string())
            })?;
            let line = record.position().map_or(0, |p| p.line());
            let field = |i: usize| record.get(at[i]).unwrap_or("");
            let bad = |i: usize, why: &str| CatalogError::Field {
                path: path.to_path_buf(),
                line,
                column: COLUMNS[i].to_string(),
                why: format!("`{}` {why}", field(i)),
            };
            let name = field(0);
            if name.is_empty() {
                return Err(bad(0, "is empty: each size needs a name"));
            }
            if entries.iter().any(|e| &*e.name == name) {
                return Err(bad(0, "is named twice"));
            }
            let vcpus = field(1)
                .parse::<u32>()
                .ok()
                .filter(|v| *v > 0)
                .ok_or_else(|| bad(1, "is not a whole number of vCPUs >= 1"))?;
            let mem_gib = field(2)
                .parse::<f64>()
                .ok()
                .filter(|m| *m > 0.0 && m.is_finite())
                .ok_or_else(|| bad(2, "is not a memory size in GiB > 0"))?;
            let price_month = field(3)
                .parse::<f64>()
                .ok()
                .filter(|p| *p >= 0.0 && p.is_finite())
                .ok_or_else(|| bad(3, "is not a monthly price >= 0"))?;
            entries.push(Entry {
                name: name.into(),
                vcpus,
                mem_gib,
                price_month,
            });
        }
        if entries.is_empty() {
            return Err(line_err(2, "no size: the catalog has a header only".into()));
        }
        entries.sort_by(|a, b| {
            (a.price_month, a.vcpus, a.mem_gib)
                .partial_cmp(&(b.price_month, b.vcpus, b.mem_gib))
                .expect("finite figures")
                .then_with(|| a.name.cmp(&b.name))
        });
        Ok(Catalog {
            path: path.to_path_buf(),
            entries,
        })
    }

    /// Every size, cheapest first.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The entry a VM of this size is: its vCPUs, and its memory within 2 %
    /// (the closest, when several are).
    pub fn find(&self, vcpus: u32, mem_gib: f64) -> Option<&Entry> {
        self.entries
            .iter()
            .filter(|e| e.vcpus == vcpus && (e.mem_gib - mem_gib).abs() <= e.mem_gib * SAME_MEMORY)
            .min_by(|a, b| {
                let d = |e: &Entry| (e.mem_gib - mem_gib).abs();
                d(a).total_cmp(&d(b))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Catalog, CatalogError> {
        Catalog::parse(Path::new("sizes.csv"), text.as_bytes())
    }

    #[test]
    fn sizes_sort_cheapest_first_and_extra_columns_are_ignored() {
        let c = parse(
            "family,name,price_month,vcpus,mem_gib\n\
             m,m.large,70.08,2,8\nc,c.large,62.05,2,4\nm,m.xlarge,140.16,4,16\nt,t.large,62.05,2,8\n",
        )
        .unwrap();
        let names: Vec<&str> = c.entries().iter().map(|e| &*e.name).collect();
        assert_eq!(names, ["c.large", "t.large", "m.large", "m.xlarge"]);
        assert_eq!(&*c.find(4, 15.7).unwrap().name, "m.xlarge", "within 2 %");
        assert!(c.find(4, 15.0).is_none());
        assert!(c.find(8, 16.0).is_none());
    }

    #[test]
    fn a_bad_catalog_names_file_line_and_column() {
        let err = |text: &str| parse(text).unwrap_err().to_string();
        assert_eq!(
            err("name,vcpus,mem_gib,price_month\na,2,8,70\nb,two,8,70\n"),
            "catalog sizes.csv (--catalog), line 3, column vcpus: `two` is not a whole number of vCPUs >= 1"
        );
        assert_eq!(
            err("name,vcpus,mem_gib,price_month\na,2,0,70\n"),
            "catalog sizes.csv (--catalog), line 2, column mem_gib: `0` is not a memory size in GiB > 0"
        );
        assert_eq!(
            err("name,vcpus,mem_gib,price_month\na,2,8,-1\n"),
            "catalog sizes.csv (--catalog), line 2, column price_month: `-1` is not a monthly price >= 0"
        );
        assert_eq!(
            err("name,vcpus,mem_gib,price_month\na,2,8,1\na,4,8,2\n"),
            "catalog sizes.csv (--catalog), line 3, column name: `a` is named twice"
        );
        assert!(
            err("name,vcpus,price_month\na,2,1\n").contains("line 1: the header lacks `mem_gib`")
        );
        assert!(err("name,vcpus,mem_gib,price_month\n").contains("header only"));
        assert!(err("name,vcpus,mem_gib,price_month\na,2,8\n").contains("line 2"));
        let missing = Catalog::load(Path::new("/nonexistent/sizes.csv")).unwrap_err();
        assert!(
            missing
                .to_string()
                .starts_with("cannot read catalog /nonexistent/sizes.csv")
        );
    }
}
