# The classic EM of the course lab (BTRY4830 Lab 12), as the lab wrote it:
# dense n x n algebra with MASS::ginv, start sa2 = 70, se2 = 10, beta = 0,
# stop when lnL gains < 1e-5, at most max.iter = 100, and return the lnL of
# the iteration before the stop.  The slide's stray minus in the se2 update
# is not copied: the lab's code has a plus, and so does this script.
#
# Usage: Rscript classic_em.R DIR [OUT [N_VARIANTS [START]]]
#   reads DIR/X.txt (samples x variants, coded -1/0/1), DIR/Y.txt, DIR/A.txt
#   writes OUT (default DIR/reference.tsv), for the first N_VARIANTS (default, or "all":
#   every one): per variant the additive (df = 1) and the genotypic (df = 2, lab's
#   b = [mu, a, d] with Xd = 1 - 2|Xa|) EM fits, their LRT p-values against the EM
#   null fit, and the lab's OLS F-test p-value.
#   START = "sa2,se2,mu" starts the variants' fits there (dlmm's --em-start null:
#   the ML null fit, the variant's effects at 0) instead of the lab's start; the
#   null fit keeps the lab's start.
#   The lnL here is the lab's: -1/2 log|C| - 1/2 r' C^-1 r, without the
#   -n/2 log(2 pi) constant.  Variants run in parallel (one process per core).
suppressMessages(library(MASS))

EM_algorithm = function(Y, X_j, A, max.iter = 100, start = NULL) {
  solve_A = ginv(A)
  n = length(Y)
  Z = diag(1, n)
  log_L = c()
  sigma_sq_a = 70
  sigma_sq_e = 10
  beta = as.vector(rep(0, ncol(X_j)))
  if (!is.null(start)) {
    sigma_sq_a = start[1]
    sigma_sq_e = start[2]
    beta[1] = start[3]
  }
  iter = 2
  C = A * sigma_sq_a + Z * sigma_sq_e
  log_L[1] = -1/2 * determinant(C)$modulus - 1/2 * t(Y - X_j %*% beta) %*% ginv(C) %*% (Y - X_j %*% beta)
  while (iter < max.iter) {
    # Expect
    S = ginv(t(Z) %*% Z + solve_A * sigma_sq_e / sigma_sq_a)
    a = S %*% t(Z) %*% (Y - X_j %*% beta)
    V = S * sigma_sq_e
    # Maximize
    beta = ginv(t(X_j) %*% X_j) %*% t(X_j) %*% (Y - Z %*% a)
    sigma_sq_a = as.numeric(1/n * (t(a) %*% solve_A %*% a + sum(diag(solve_A %*% V))))
    sigma_sq_e = as.numeric(1/n * (t(Y - X_j %*% beta - Z %*% a) %*% (Y - X_j %*% beta - Z %*% a) +
                                   sum(diag(t(Z) %*% Z %*% V))))
    C = A * sigma_sq_a + Z * sigma_sq_e
    log_L[iter] = -1/2 * determinant(C)$modulus - 1/2 * t(Y - X_j %*% beta) %*% ginv(C) %*% (Y - X_j %*% beta)
    if (log_L[iter] - log_L[iter - 1] < 1e-05) { break }
    iter = iter + 1
  }
  list(beta = beta, sigma_sq_a = sigma_sq_a, sigma_sq_e = sigma_sq_e,
       log_L = log_L[iter - 1], iterations = length(log_L) - 1)
}

pval_calculator_lab7 <- function(pheno_input, xa_input, xd_input) {
  n_samples <- length(xa_input)
  X_mx <- cbind(1, xa_input, xd_input)
  MLE_beta <- ginv(t(X_mx) %*% X_mx) %*% t(X_mx) %*% pheno_input
  y_hat <- X_mx %*% MLE_beta
  SSM <- sum((y_hat - mean(pheno_input))^2)
  SSE <- sum((pheno_input - y_hat)^2)
  df_M <- 2
  df_E <- n_samples - 3
  Fstatistic <- (SSM / df_M) / (SSE / df_E)
  pf(Fstatistic, df_M, df_E, lower.tail = FALSE)
}

args = commandArgs(trailingOnly = TRUE)
dir = args[1]
out_file = if (length(args) >= 2) args[2] else file.path(dir, "reference.tsv")
X = as.matrix(read.table(file.path(dir, "X.txt")))
if (length(args) >= 3 && args[3] != "all") X = X[, 1:as.integer(args[3]), drop = FALSE]
start = if (length(args) >= 4) as.numeric(strsplit(args[4], ",")[[1]]) else NULL
Y = as.matrix(read.table(file.path(dir, "Y.txt")))
A = as.matrix(read.table(file.path(dir, "A.txt")))
n = length(Y)
null = EM_algorithm(Y, as.matrix(rep(1, n)), A)
row = function(j) {
  xa = X[, j]
  xd = 1 - 2 * abs(xa)
  add = EM_algorithm(Y, cbind(1, xa), A, start = start)
  gen = EM_algorithm(Y, cbind(1, xa, xd), A, start = start)
  data.frame(
    variant = j,
    null_logl = null$log_L, null_iterations = null$iterations,
    add_logl = add$log_L, add_iterations = add$iterations,
    add_beta = add$beta[2], add_sigma_sq_a = add$sigma_sq_a, add_sigma_sq_e = add$sigma_sq_e,
    add_p = pchisq(-2 * (null$log_L - add$log_L), 1, lower.tail = FALSE),
    gen_logl = gen$log_L, gen_iterations = gen$iterations,
    gen_p = pchisq(-2 * (null$log_L - gen$log_L), 2, lower.tail = FALSE),
    ols_p = pval_calculator_lab7(Y, xa, xd))
}
rows = parallel::mclapply(seq_len(ncol(X)), row, mc.cores = parallel::detectCores())
failed = sapply(rows, inherits, "try-error")
if (any(failed)) stop(rows[[which(failed)[1]]])
out = do.call(rbind, rows)
write.table(format(out, digits = 17), out_file, sep = "\t",
            quote = FALSE, row.names = FALSE)
