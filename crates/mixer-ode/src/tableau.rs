//! Butcher tableaux of explicit Runge–Kutta methods; each checks itself when built.

use mixer_core::Error;

/// An explicit Runge–Kutta method: stages `c`, lower-triangular `a`, weights `b`, and for
/// embedded pairs the error weights `b_err = b - b_hat`.
#[derive(Clone, Debug, PartialEq)]
pub struct Tableau {
    /// Stage times as fractions of the step.
    pub c: Vec<f64>,
    /// Stage coefficients; row `i` has `i` entries.
    pub a: Vec<Vec<f64>>,
    /// Solution weights.
    pub b: Vec<f64>,
    /// Error-estimate weights (`b - b_hat`), for adaptive methods.
    pub b_err: Option<Vec<f64>>,
    /// Order of the solution.
    pub order: usize,
    /// The last stage is `f(t + h, y_next)` (first same as last).
    pub fsal: bool,
}

impl Tableau {
    /// Builds a tableau after checking its consistency (row sums equal `c`, weights sum to 1,
    /// error weights sum to 0).
    pub fn new(
        c: Vec<f64>,
        a: Vec<Vec<f64>>,
        b: Vec<f64>,
        b_err: Option<Vec<f64>>,
        order: usize,
        fsal: bool,
    ) -> Result<Self, Error> {
        let s = c.len();
        if a.len() != s || b.len() != s || b_err.as_ref().is_some_and(|e| e.len() != s) {
            return Err(Error::shape("tableau", s, (a.len(), b.len())));
        }
        for (i, row) in a.iter().enumerate() {
            if row.len() != i {
                return Err(Error::shape(format!("tableau row {i}"), i, row.len()));
            }
            let sum: f64 = row.iter().sum();
            if (sum - c[i]).abs() > 1e-12 {
                return Err(Error::config("tableau.a", format!("row {i} sums to {sum}, not c = {}", c[i])));
            }
        }
        let sb: f64 = b.iter().sum();
        if (sb - 1.0).abs() > 1e-12 {
            return Err(Error::config("tableau.b", format!("weights sum to {sb}, not 1")));
        }
        if let Some(e) = &b_err {
            let se: f64 = e.iter().sum();
            if se.abs() > 1e-12 {
                return Err(Error::config("tableau.b_err", format!("error weights sum to {se}, not 0")));
            }
        }
        if fsal && a.last().map(|r| r.iter().chain([&0.0]).zip(&b).any(|(x, y)| (x - y).abs() > 1e-15)) == Some(true) {
            return Err(Error::config("tableau", "first-same-as-last needs the last row of a to equal b"));
        }
        Ok(Self { c, a, b, b_err, order, fsal })
    }

    /// Forward Euler (order 1).
    pub fn euler() -> Self {
        Self::new(vec![0.0], vec![vec![]], vec![1.0], None, 1, false).expect("valid tableau")
    }

    /// The classical fourth-order Runge–Kutta method.
    pub fn rk4() -> Self {
        Self::new(
            vec![0.0, 0.5, 0.5, 1.0],
            vec![vec![], vec![0.5], vec![0.0, 0.5], vec![0.0, 0.0, 1.0]],
            vec![1.0 / 6.0, 1.0 / 3.0, 1.0 / 3.0, 1.0 / 6.0],
            None,
            4,
            false,
        )
        .expect("valid tableau")
    }

    /// Tsitouras' 5(4) pair (Tsitouras 2011), first same as last.
    pub fn tsit5() -> Self {
        let a7 = vec![
            0.09646076681806523,
            0.01,
            0.4798896504144996,
            1.379008574103742,
            -3.290069515436081,
            2.324710524099774,
        ];
        let mut b = a7.clone();
        b.push(0.0);
        Self::new(
            vec![0.0, 0.161, 0.327, 0.9, 0.9800255409045097, 1.0, 1.0],
            vec![
                vec![],
                vec![0.161],
                vec![-0.008480655492356989, 0.335480655492357],
                vec![2.897153057105493, -6.359448489975075, 4.3622954328695815],
                vec![5.325864828439257, -11.748883564062828, 7.4955393428898365, -0.09249506636175525],
                vec![
                    5.86145544294642,
                    -12.92096931784711,
                    8.159367898576159,
                    -0.071584973281401,
                    -0.028269050394068383,
                ],
                a7,
            ],
            b,
            Some(vec![
                -0.001_780_011_052_225_777,
                -0.0008164344596567469,
                0.007880878010261995,
                -0.1447110071732629,
                0.5823571654525552,
                -0.45808210592918697,
                1.0 / 66.0,
            ]),
            5,
            true,
        )
        .expect("valid tableau")
    }

    /// Number of stages.
    pub fn stages(&self) -> usize {
        self.c.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_tableaux_are_consistent_and_bad_ones_rejected() {
        assert_eq!(Tableau::tsit5().stages(), 7);
        assert_eq!(Tableau::rk4().order, 4);
        assert!(Tableau::new(vec![0.0, 0.5], vec![vec![], vec![0.4]], vec![0.5, 0.5], None, 2, false).is_err());
        assert!(Tableau::new(vec![0.0, 0.5], vec![vec![], vec![0.5]], vec![0.5, 0.6], None, 2, false).is_err());
        assert!(Tableau::new(vec![0.0], vec![vec![]], vec![1.0], Some(vec![0.1]), 1, false).is_err());
    }
}
