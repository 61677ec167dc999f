"""Seed 003: an actor calling another actor through its handle.

Handles are small picklable values: pass one to another actor (or a task)
and it can call the first actor's methods.  Calls from one caller run in the
order they were made, so the account sees every deposit in order.

Run with:  python examples/actor_handles.py
"""

import actorkit as ray


@ray.remote
class Account:
    def __init__(self, owner):
        self.owner = owner
        self.balance = 0
        self.history = []

    def deposit(self, amount, by):
        self.balance += amount
        self.history.append((by, amount))
        return self.balance

    def statement(self):
        return self.owner, self.balance, self.history


@ray.remote
class Payroll:
    """Holds the handle of another actor and calls it."""

    def __init__(self, account):
        self.account = account

    def pay(self, months, salary):
        balances = [self.account.deposit.remote(salary, f"payroll month {m}") for m in range(1, months + 1)]
        return ray.get(balances)


@ray.remote
def gift(account, amount):
    # A task with the handle calls the actor too.
    return ray.get(account.deposit.remote(amount, "gift"))


ray.init()
account = Account.options(name="ada-account").remote("ada")
payroll = Payroll.remote(account)

print("balances after each salary:", ray.get(payroll.pay.remote(3, 100)))
print("after a gift:", ray.get(gift.remote(account, 50)))

# A named actor can be found again by name, from anywhere in the job.
same = ray.get_actor("ada-account")
owner, balance, history = ray.get(same.statement.remote())
print(f"{owner}: balance {balance}")
for by, amount in history:
    print(f"  {by}: +{amount}")
ray.shutdown()
